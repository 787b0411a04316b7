//! `dataplane-runtime`: runc's command line, with the dataplane hook added to containers at
//! `create`/`run`. Configuration: $DATAPLANE_HOOK_CONFIG, else /etc/dataplane-hook/config.toml.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let loaded = match dataplane_hook::config::Loaded::resolve(None) {
        Ok(l) => l,
        Err(e) => dataplane_hook::log::fail(&e.into()),
    };
    dataplane_hook::log::init(&loaded.config, "dataplane-runtime");
    let err = dataplane_hook::runtime::main(args, &loaded);
    dataplane_hook::log::fail(&err);
}
