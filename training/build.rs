// The shared libtorch link settings (also used by app/, serving/ and tests/), plus the small
// C++ shim that only this crate needs (training/csrc): tch can switch autocast on but cannot
// choose its dtype, and bf16 needs that (autocast.cpp); nor can it tell whether a tensor is
// the sole owner of its memory, which recycling batch buffers needs (tensor.cpp).
mod torch_link {
    include!("torch_link.rs");

    pub fn link() {
        main();
    }

    pub fn lib_dir() -> Option<PathBuf> {
        torch_lib_dir()
    }

    /// `torch._C._GLIBCXX_USE_CXX11_ABI` of the venv's torch ("1" when it cannot be asked:
    /// every torch wheel since 2.7 and every libtorch download use the new ABI).
    pub fn cxx11_abi() -> String {
        if let Ok(v) = std::env::var("LIBTORCH_CXX11_ABI") {
            return v;
        }
        if std::env::var_os("LIBTORCH").is_some() {
            return "1".into();
        }
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        Command::new(python)
            .args([
                "-c",
                "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))",
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| s == "0" || s == "1")
            .unwrap_or_else(|| "1".into())
    }
}

fn main() {
    torch_link::link();
    println!("cargo:rerun-if-changed=csrc/autocast.cpp");
    println!("cargo:rerun-if-changed=csrc/tensor.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let Some(lib) = torch_link::lib_dir() else {
        // torch-sys fails with its own message in this case; nothing to build against.
        return;
    };
    // Headers sit beside lib/ in both a libtorch download and the Python wheel.
    let include = lib.parent().map(|p| p.join("include")).unwrap_or_default();
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .std("c++17")
        .include(&include)
        .define("_GLIBCXX_USE_CXX11_ABI", torch_link::cxx11_abi().as_str())
        .file("csrc/autocast.cpp")
        .file("csrc/tensor.cpp")
        .compile("facepipe_shim");
}
