// The tests of this crate link libtorch: the shared link settings.
include!("../torch_link.rs");
