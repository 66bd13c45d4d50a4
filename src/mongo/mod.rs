//! MongoDB adapter: implements the core store traits with the official `mongodb` crate.
