#!/bin/sh
# Renders a study's index.html in headless Chromium (Debian: apt-get install chromium) and
# checks it the way a reader meets it: every image it links decodes, the sections come in
# order (headline, figure 1 when there are examples, plots, summary), the headline table has
# rows, and the summary table's filter script runs (typing a word hides rows). Writes a
# screenshot of the top of the page (look at it) and prints what it measured.
#
#   scripts/check-index.sh reports/fragility [screenshot.png]
set -eu
dir=${1:?usage: scripts/check-index.sh STUDY_DIR [SCREENSHOT.png]}
page="$(cd "$dir" && pwd)/index.html"
[ -f "$page" ] || { echo "no $page" >&2; exit 2; }
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "no chromium found (apt-get install chromium)" >&2; exit 2; }
out=$(mktemp -d)
shot=${2:-$out/index.png}
# A fresh profile and no background traffic: the page must render offline, on its own.
flags="--headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
  --disable-sync --no-first-run --user-data-dir=$out/profile --allow-file-access-from-files"
# The probe loads the page in an iframe (same origin: file://), waits for it, then inspects it.
cat > "$out/probe.html" <<HTML
<!DOCTYPE html><html><body><iframe id="f" src="file://$page" style="width:1400px;height:900px"></iframe>
<pre id="r">pending</pre>
<script>
document.getElementById('f').onload = function () {
  var d = this.contentDocument, imgs = Array.from(d.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var pos = function (id) { var e = d.getElementById(id); return e ? e.getBoundingClientRect().top : -1; };
  var ids = ['headline', 'examples', 'plots', 'summary'].filter(function (id) { return pos(id) >= 0; });
  var ordered = ids.every(function (id, k) { return k === 0 || pos(ids[k - 1]) < pos(id); });
  var head = d.querySelectorAll('table.headline tr').length;
  var box = d.getElementById('summary-filter'), body = d.querySelector('#summary-table tbody');
  var rows = body ? body.rows.length : 0, shown = rows;
  if (box && body) {
    box.value = 'zzz-no-such-row';
    box.dispatchEvent(new Event('input'));
    shown = Array.from(body.rows).filter(function (r) { return r.style.display !== 'none'; }).length;
  }
  document.getElementById('r').textContent =
    'images ' + ok + '/' + imgs.length + ' sections ' + ids.join(',') + ' ordered ' + ordered +
    ' headline-rows ' + head + ' summary-rows ' + rows + ' filtered ' + shown +
    ' title ' + JSON.stringify(d.title);
};
</script></body></html>
HTML
# shellcheck disable=SC2086
result=$("$browser" $flags --virtual-time-budget=10000 --dump-dom "file://$out/probe.html" 2>/dev/null |
  sed -n 's/.*<pre id="r">\(.*\)<\/pre>.*/\1/p')
# shellcheck disable=SC2086
"$browser" $flags --window-size=1400,2400 --screenshot="$shot" "file://$page" >/dev/null 2>&1 || true
echo "$page: $result (screenshot: $shot)"
case "$result" in
  images\ *) ;;
  *) echo "the page did not render" >&2; exit 1 ;;
esac
set -- $result
[ "${2%/*}" = "${2#*/}" ] && [ "${2#*/}" -gt 0 ] || { echo "some images did not load" >&2; exit 1; }
[ "$6" = true ] || { echo "sections out of order: $4" >&2; exit 1; }
[ "$8" -gt 1 ] || { echo "the headline table has no rows" >&2; exit 1; }
[ "${12}" = 0 ] || { echo "the summary filter did not hide rows (${12} of ${10} shown)" >&2; exit 1; }
