use clap::Parser;

fn main() {
    let cli = dataplane_hook::cli::Cli::parse();
    if let Err(e) = dataplane_hook::cli::run(cli) {
        dataplane_hook::log::fail(&e);
    }
}
