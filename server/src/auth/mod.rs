//! Authentication: who is calling. Owns the service key (admin access for
//! operators and servers). It decides identity only; what an identity may do
//! is for `rules` and each part's own checks.

pub mod service_key;
