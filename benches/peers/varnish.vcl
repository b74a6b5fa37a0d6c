vcl 4.1;

# benches/peers.sh: Varnish in front of `hotfeed serve` with CACHE=off. Every 200 of a GET is
# cached for the same TTL as hotfeed's CACHE_LIST_TTL_SECS, with no grace (never served stale past
# it) and the backend's Cache-Control ignored; concurrent misses of one URL wait for one backend
# fetch (Varnish's request coalescing, on by default). Backend connections are kept alive.

backend default {
    .host = "127.0.0.1";
    .port = "@BACKEND_PORT@";
}

sub vcl_recv {
    if (req.url ~ "^/(metrics|health|ping)") {
        return (pass);
    }
    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }
    return (hash);
}

sub vcl_backend_response {
    if (beresp.status == 200) {
        set beresp.ttl = @TTL@s;
        set beresp.grace = 0s;
        unset beresp.http.Cache-Control;
    } else {
        set beresp.uncacheable = true;
        set beresp.ttl = 0s;
    }
    return (deliver);
}
