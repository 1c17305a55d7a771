//! Arguments several subcommands share.

use std::path::PathBuf;

use clap::Args;

#[derive(Args, Clone)]
pub struct DataDirArg {
    /// Where data sets, bundles and embedded stores live.
    #[arg(long, env = "RECSYS_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
}

#[derive(Args, Clone)]
pub struct ServingArgs {
    /// Configuration file (default: ./recsys.toml when it exists); RECSYS__SECTION__KEY overrides.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Overrides `data_dir` of the configuration.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl ServingArgs {
    pub fn load(&self) -> anyhow::Result<engine::config::Config> {
        let mut config = engine::config::load_config(self.config.as_deref())?;
        if let Some(data_dir) = &self.data_dir {
            config.data_dir = data_dir.clone();
        }
        Ok(config)
    }
}
