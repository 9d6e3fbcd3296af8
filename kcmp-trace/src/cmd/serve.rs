//! `kcmp-trace serve`: the daemon, configured from the command line and stopped by Ctrl-C
//! or SIGTERM.

use std::time::Duration;

use crate::{
    cli::ServeArgs,
    lifecycle::Shutdown,
    serve::{self, ServeConfig, UnixSocket, events::Budget},
};

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = config(args);
    let rt = serve::runtime()?;
    let result = rt.block_on(async {
        // Handlers first: a SIGTERM during startup must still end in a clean exit.
        let mut shutdown = Shutdown::install()?;
        serve::serve(config, shutdown.wait()).await
    });
    rt.shutdown_timeout(Duration::from_millis(200));
    result
}

fn config(args: ServeArgs) -> ServeConfig {
    ServeConfig {
        trace: crate::config::TraceConfig {
            events: !args.no_events,
            ring_bytes: args.ring_size,
            ..args.trace.config()
        },
        tcp: args.tcp(),
        unix: args.unix.map(|path| UnixSocket {
            path,
            mode: args.unix_mode,
            group: args.unix_group,
        }),
        tcp_per_call_data: args.tcp_per_call_data,
        web_config_file: args.web_config_file,
        top_comms: args.top_comms,
        comm_series_ttl: args.comm_series_ttl,
        max_event_clients: args.max_event_clients,
        max_event_clients_per_client: args.max_event_clients_per_client,
        event_budget: Budget {
            per_client: args.event_client_buffer.into(),
            total: args.event_buffer_total.into(),
        },
        reader_nice: args.reader_nice,
        max_connections: args.max_connections,
        bpf_stats: args.bpf_stats,
    }
}
