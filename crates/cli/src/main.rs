//! The `indras-fuse` command. The only place that turns an error into an exit code.

mod cli;
mod control;
mod history;
mod locate;
mod network;

fn main() {
    if let Err(e) = cli::run() {
        eprintln!("indras-fuse: {e:#}");
        std::process::exit(1);
    }
}
