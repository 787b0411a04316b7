use clap::Parser;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(dataplane_hook::group::holder::SUBCOMMAND) {
        dataplane_hook::group::holder::main(&args[2..]);
    }
    let cli =
        dataplane_hook::cli::hook_stage(&args).unwrap_or_else(dataplane_hook::cli::Cli::parse);
    if let Err(e) = dataplane_hook::cli::run(cli) {
        dataplane_hook::log::fail(&e);
    }
}
