include!("torch_link.rs");
