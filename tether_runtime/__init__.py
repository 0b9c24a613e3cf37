"""What every Tether process shares at run time, and nothing else.

- `tether_runtime.settings`: typed frozen settings from the environment (one loader: field → variable,
  parsing by the field's type, errors that name the variable);
- `tether_runtime.logs`: the one JSON log schema (docs/logging.md) and the logging set-up;
- `tether_runtime.metrics`: the histogram bucket layouts of the metric catalog (docs/metrics.md) and
  `tether_build_info{component,version}`;
- `tether_runtime.version`: the version of the installed `tether` distribution.

The package imports none of the services (router, api_box, gpu_worker, the launcher), so every one of them,
the router included, may import it. The modules are imported one by one: importing `tether_runtime.settings`
does not pull in prometheus_client.
"""
