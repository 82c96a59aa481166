include!("../training/torch_link.rs");
