//! A plugin that sleeps in `describe`: a host that waited for it would
//! never finish loading, nor start serving.

use engram_plugin_sdk::{Context, Error, Plugin, Tool, Value};

struct Sleepy;

impl Plugin for Sleepy {
    fn tools() -> Vec<Tool> {
        std::thread::sleep(std::time::Duration::from_secs(600));
        vec![Tool::new("awake", "Never described in time.")]
    }

    fn call(_: &Context, _: &str, args: Value) -> Result<Value, Error> {
        Ok(args)
    }
}

engram_plugin_sdk::export_plugin!(Sleepy);
