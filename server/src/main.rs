//! `scr-server`: for now one subcommand, `demo`, which tells the story of the
//! encrypted replica on three simulated devices. `serve` and `admin` arrive
//! with the server issue.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("demo") => {
            let data_dir = match parse_data_dir(&args[1..]) {
                Ok(d) => d,
                Err(msg) => {
                    eprintln!("{msg}");
                    return ExitCode::from(2);
                }
            };
            match scr_server::demo::run(data_dir) {
                Ok(outcome) if outcome.all_passed() => ExitCode::SUCCESS,
                Ok(_) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("demo failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!("usage: scr-server demo [--data-dir DIR]");
            ExitCode::from(2)
        }
    }
}

fn parse_data_dir(args: &[String]) -> Result<Option<PathBuf>, String> {
    match args {
        [] => Ok(None),
        [flag, dir] if flag == "--data-dir" => Ok(Some(PathBuf::from(dir))),
        _ => Err("usage: scr-server demo [--data-dir DIR]".into()),
    }
}
