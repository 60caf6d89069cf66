//! `tally`: parse, run one command, print human lines or one JSON object. Exit 0 on success (a
//! denied check is a success); otherwise one line on stderr and exit 1.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use tally_tui::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Top { interval } = &cli.command {
        return match tally_tui::run::run_top(&cli, interval) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("tally: {}", format!("{error:#}").replace('\n', " "));
                ExitCode::FAILURE
            }
        };
    }
    let json = cli.json;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(tally_tui::run::run(cli)) {
        Ok(output) => {
            if json {
                println!("{}", output.json);
            } else {
                println!("{}", output.human);
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("tally: {}", format!("{error:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
