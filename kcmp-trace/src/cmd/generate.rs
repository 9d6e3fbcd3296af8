//! `kcmp-trace generate`: man pages and shell completions from the clap definitions, so
//! packages ship documentation that matches the binary; the JSON output's schemas from the
//! types that write it.

use anyhow::Context as _;
use clap::CommandFactory as _;
use clap_complete::Shell;
use kcmp_trace_common::json::schema::FORMATS;

use crate::cli::{Cli, GenerateArgs, Generated};

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let mut cli = Cli::command();
    match args.what {
        Generated::Man => clap_mangen::generate_to(cli, &args.dir)
            .with_context(|| format!("writing man pages to {}", args.dir.display()))?,
        Generated::Completions => {
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                clap_complete::generate_to(shell, &mut cli, "kcmp-trace", &args.dir).with_context(
                    || format!("writing {shell} completions to {}", args.dir.display()),
                )?;
            }
        }
        Generated::Schemas => {
            for format in &FORMATS {
                let path = args.dir.join(format.file);
                std::fs::write(&path, format.text())
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    Ok(())
}
