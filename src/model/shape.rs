//! The shape of one image's values at a node of a [`super::graph::Graph`], and the bound on
//! it: the leaf both the graph and its ops ([`super::ops`]) read.

/// The shape of one image's values at a node.
///
/// A transformer's token sequence [T, D] (T tokens of D features; PyTorch's [N, T, D]) is a
/// feature map `Map(D, T, 1)`: channels = features, rows = tokens, one column. So the ops
/// that act on each token alone are the feature-map ops over channels at each position (a
/// `Linear` on the last axis is a 1×1 convolution, `LayerNorm` over D is the layer norm over
/// channels, the residual sum is an add), the CPU blocks [C, n, H·W] become [D, n, T], and
/// only the ops that mix tokens (attention, the class token) are new (see
/// [`super::ops`]'s layouts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A feature map (C, H, W).
    Map(usize, usize, usize),
    /// A flat vector of this length.
    Flat(usize),
}

impl Shape {
    /// Values per image.
    pub fn len(&self) -> usize {
        match *self {
            Shape::Map(c, h, w) => c * h * w,
            Shape::Flat(f) => f,
        }
    }

    /// Whether it holds no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values per image, or None when the count overflows.
    pub fn checked_len(&self) -> Option<usize> {
        match *self {
            Shape::Map(c, h, w) => c.checked_mul(h)?.checked_mul(w),
            Shape::Flat(f) => Some(f),
        }
    }

    /// (C, H, W) of a feature map, or what it is instead.
    pub fn map(&self) -> std::result::Result<(usize, usize, usize), String> {
        match *self {
            Shape::Map(c, h, w) => Ok((c, h, w)),
            Shape::Flat(f) => Err(format!("needs a feature map, got a flat vector of {f}")),
        }
    }

    /// Channels: C of a map, F of a flat vector (one "channel" per entry, as a per-channel
    /// op on a flat vector reads it).
    pub fn channels(&self) -> usize {
        match *self {
            Shape::Map(c, _, _) => c,
            Shape::Flat(f) => f,
        }
    }

    /// Tensor dims [B, …] for a batch of `b`.
    pub fn dims(&self, b: usize) -> Vec<usize> {
        match *self {
            Shape::Map(c, h, w) => vec![b, c, h, w],
            Shape::Flat(f) => vec![b, f],
        }
    }
}

/// The most values one image may have at any node (2²⁸ f32 = 1 GiB per image), its padded
/// convolution input included: far above any real classifier (VGG at 224×224 peaks at
/// 3.2 M), far below what a hostile file's pads or kernels would make the passes allocate.
pub const MAX_NODE_VALUES: usize = 1 << 28;

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shape::Map(c, h, w) => write!(f, "{c}×{h}×{w}"),
            Shape::Flat(n) => write!(f, "{n}"),
        }
    }
}
