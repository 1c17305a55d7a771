//! Build script shared by every crate whose binaries or tests link libtorch.
//!
//! torch-sys tells its direct dependents where libtorch lives (`DEP_TCH_LIBTORCH_LIB`). We bake that
//! directory into the binary's rpath so nobody has to set `LD_LIBRARY_PATH` to run it. Cargo only
//! applies `rustc-link-arg` to the binaries and tests of the package whose build script emits it,
//! which is why each such crate points its `build` key at this one file.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(libtorch_lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{libtorch_lib_dir}");
    }
}
