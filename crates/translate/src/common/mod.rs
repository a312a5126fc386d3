//! What every frontend shares: model ids and families, media given by reference, and the
//! thought-signature memory.

pub mod media;
pub mod model;
pub mod signatures;
