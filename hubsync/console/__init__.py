"""The activation console: the web page `hubsync up` serves at `/` next to the HTTP API, and the
Grafana dashboard hubsync ships (``grafana/hubsync.json``). Everything the page needs (HTML
templates, CSS, JavaScript) ships in this package: nothing is fetched from the internet."""
