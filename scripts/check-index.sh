#!/bin/sh
# Renders a study's index.html in headless Chromium (Debian: apt-get install chromium) and
# checks that the page and every plot it links load: prints the page's visible text length
# and the number of images that decoded, and fails if any linked image did not.
#
#   scripts/check-index.sh reports/fragility
set -eu
dir=${1:?usage: scripts/check-index.sh STUDY_DIR}
page="$(cd "$dir" && pwd)/index.html"
[ -f "$page" ] || { echo "no $page" >&2; exit 2; }
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "no chromium found (apt-get install chromium)" >&2; exit 2; }
# --dump-dom runs the page's script-free layout; the probe script below is injected through a
# data: URL wrapper that loads the page in an iframe and counts decoded images.
out=$(mktemp -d)
cat > "$out/probe.html" <<HTML
<!DOCTYPE html><html><body><iframe id="f" src="file://$page" style="width:1400px;height:900px"></iframe>
<pre id="r">pending</pre>
<script>
document.getElementById('f').onload = function () {
  var d = this.contentDocument, imgs = Array.from(d.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.getElementById('r').textContent =
    'images ' + ok + '/' + imgs.length + ' text ' + d.body.innerText.length +
    ' rows ' + d.querySelectorAll('tr').length;
};
</script></body></html>
HTML
result=$("$browser" --headless --no-sandbox --disable-gpu --allow-file-access-from-files \
  --virtual-time-budget=10000 --dump-dom "file://$out/probe.html" 2>/dev/null | sed -n 's/.*<pre id="r">\(.*\)<\/pre>.*/\1/p')
"$browser" --headless --no-sandbox --disable-gpu --window-size=1400,2400 \
  --screenshot="$out/index.png" "file://$page" >/dev/null 2>&1 || true
echo "$page: $result (screenshot: $out/index.png)"
case "$result" in
  images\ *) set -- $result
             [ "${2%/*}" = "${2#*/}" ] && [ "${2#*/}" -gt 0 ] || { echo "some plots did not load" >&2; exit 1; } ;;
  *) echo "the page did not render" >&2; exit 1 ;;
esac
