vcl 4.1;

# Mirror's cache tier: Varnish 7.1 (Debian 12's `varnish`; the varnish:7 image runs it
# too) in front of Mirror's plain-HTTP listener for a cache tier (`server.http_listen`).
# No vmod is used, so it compiles wherever Varnish does.
#
# What it keeps for LL-HLS (RFC 8216bis Appendix B):
# - identical requests collapse: the first miss goes to Mirror, the others wait on
#   Varnish's waiting list for it (nothing here sets hash_ignore_busy or passes a
#   playlist or a part), and a miss is streamed to all of them as it arrives;
# - one object per resource: the cache key is the path and only the `_HLS_msn`,
#   `_HLS_part` and `_HLS_skip` parameters, and gzip-capable and other clients share
#   one (gzipped) playlist object;
# - Mirror's Cache-Control decides every TTL; `no-store` and `private` are never stored;
# - a blocking playlist is never served stale; a plain one may be, a few seconds;
# - playback tokens (Mirror's [auth]) are checked at this edge and kept out of the
#   cache key: Varnish cannot verify a signature, so it asks Mirror once per token (a
#   pre-flight to `/t/TOKEN/STREAM/.access`, or `/STREAM/.access` without a token,
#   answered 204 and cached for a few seconds per token). Admitted, the request goes on
#   without its token, so every viewer of a stream shares one object and one request
#   held at the origin, and reaches Mirror with the CDN's shared secret; refused, the
#   client gets Mirror's 401 or 403.

probe mirror_healthz {
    .url = "/healthz";
    .interval = 2s;
    .timeout = 1s;
    .window = 5;
    .threshold = 3;
    # Healthy from the start: requests are not refused while the first probes run.
    .initial = 3;
}

backend mirror {
    # Mirror's `server.http_listen`. Tests and compose.yaml substitute the host and the
    # port with sed: keep each of the two lines below on its own, in this form.
    .host = "127.0.0.1";
    .port = "8080";
    .connect_timeout = 1s;
    # A blocking playlist reload (and a request for the hinted part) is held by Mirror
    # until the part exists, up to 3 target durations (then 503). 10 s covers target
    # durations up to 3 s with margin; raise it to 3 x TD + 1 s for longer segments.
    .first_byte_timeout = 10s;
    # A segment still in production arrives part by part, one PART-TARGET apart; a
    # longer silence means its source stalled, and Mirror cuts the response (never
    # cached) soon after anyway.
    .between_bytes_timeout = 5s;
    .probe = mirror_healthz;
}

sub vcl_recv {
    # Only GET and HEAD are cacheable; CORS preflights, admin writes and anything else
    # go to Mirror as they are.
    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }
    # A stream's resource (`/STREAM/…`, `/t/TOKEN/STREAM/…`): first the pre-flight.
    # What a client sends in these headers is never trusted.
    if (req.restarts == 0) {
        unset req.http.X-Mirror-Admitted;
        unset req.http.X-Mirror-Original;
        if (req.url ~ "^/(t/[^/?]+/)?[^/?]+/" && req.url !~ "^/admin/") {
            set req.http.X-Mirror-Original = req.url;
            set req.url = regsub(req.url, "^(/(t/[^/?]+/)?[^/?]+/).*$", "\1.access");
            unset req.http.Cookie;
            # A bearer token's answer is that viewer's alone: asked for each time.
            if (req.http.Authorization) {
                return (pass);
            }
            return (hash);
        }
    } else if (req.http.X-Mirror-Admitted == "1") {
        # Admitted: the resource itself, without the token.
        set req.url = regsub(req.http.X-Mirror-Original, "^/t/[^/?]+", "");
    }
    # The operator's endpoints: answered by Mirror each time, never stored.
    if (req.url ~ "^/admin(/|\?|$)" || req.url ~ "^/(metrics|healthz|readyz|streams)(\?|$)") {
        return (pass);
    }
    # Nothing Mirror serves depends on a cookie or a credential; a credential is
    # passed through rather than shared through the cache.
    unset req.http.Cookie;
    if (req.http.Authorization) {
        return (pass);
    }

    # The cache key: the path and only the LL-HLS delivery directives, in one order
    # (_HLS_msn, _HLS_part, _HLS_skip: sorted by name), every other parameter dropped
    # (cache busters, analytics, a player's session ids). The URL is rewritten, not only
    # hashed, so that what Mirror answers is exactly the request the key names. With a
    # parameter given twice, the last one counts.
    if (req.url ~ "\?") {
        set req.http.X-Mirror-Query = "";
        if (req.url ~ "[?&]_HLS_msn=") {
            set req.http.X-Mirror-Query = req.http.X-Mirror-Query + "&" +
                regsub(req.url, "^.*[?&](_HLS_msn=[^&#]*).*$", "\1");
        }
        if (req.url ~ "[?&]_HLS_part=") {
            set req.http.X-Mirror-Query = req.http.X-Mirror-Query + "&" +
                regsub(req.url, "^.*[?&](_HLS_part=[^&#]*).*$", "\1");
        }
        if (req.url ~ "[?&]_HLS_skip=") {
            set req.http.X-Mirror-Query = req.http.X-Mirror-Query + "&" +
                regsub(req.url, "^.*[?&](_HLS_skip=[^&#]*).*$", "\1");
        }
        set req.url = regsub(req.url, "\?.*$", "");
        if (req.http.X-Mirror-Query != "") {
            set req.url = req.url + "?" + regsub(req.http.X-Mirror-Query, "^&", "");
        }
        unset req.http.X-Mirror-Query;
    }

    return (hash);
}

sub vcl_hash {
    # The URL alone: Mirror's answers do not depend on the Host a client used, so the
    # names a CDN, a load balancer and a player use share one object.
    #
    # Accept-Encoding needs nothing here, as long as http_gzip_support stays on (the
    # default). Varnish then asks its backend for gzip on every miss, stores the
    # gzipped playlist once, gunzips it on delivery for a client that cannot take gzip,
    # and ignores Accept-Encoding when it matches Mirror's `Vary: Accept-Encoding`: a
    # gzip client, an identity client and "br, gzip;q=0.8" share one object and one
    # request held at the origin.
    hash_data(req.url);
    return (lookup);
}

sub vcl_backend_fetch {
    # The CDN's shared secret (Mirror's `[auth] cdn_secret`) on every request: a
    # stream's resource reaches Mirror only once its pre-flight admitted it, and Mirror
    # checks a pre-flight's token whatever the secret says. Tests and compose.yaml
    # substitute the value with sed: keep it in this form.
    set bereq.http.x-mirror-cdn-secret = "CHANGE-ME-CDN-SECRET";
    unset bereq.http.X-Mirror-Admitted;
    unset bereq.http.X-Mirror-Original;
}

sub vcl_deliver {
    # The pre-flight's answer: admitted, the request starts again for the resource;
    # refused, Mirror's 401 or 403 (its body says why) is the answer.
    if (req.restarts == 0 && req.http.X-Mirror-Original) {
        if (resp.status == 204) {
            set req.http.X-Mirror-Admitted = "1";
            return (restart);
        }
    }
}

sub vcl_backend_response {
    # Stream every miss: the waiting clients get a part or a segment as it arrives
    # instead of after its last byte (a segment in production arrives part by part).
    set beresp.do_stream = true;

    # Nothing Mirror serves sets a cookie; if one ever came, it must not be shared.
    unset beresp.http.Set-Cookie;

    # What Mirror says must not be stored is not: a refusal of a name or directive that
    # will exist within seconds, the player page, the status endpoints. The short
    # hit-for-miss (1 s instead of the built-in 2 minutes) lets requests in that second
    # go to Mirror at once instead of queueing behind each other, and lets the next
    # request after it be collapsed again: the name may exist by then.
    if (beresp.http.Cache-Control ~ "(?i)(^|[,\s])(no-store|private|no-cache)([,=\s]|$)" ||
        (!beresp.http.Cache-Control && !beresp.http.Expires) ||
        beresp.http.Vary == "*") {
        set beresp.ttl = 1s;
        set beresp.grace = 0s;
        set beresp.uncacheable = true;
        return (deliver);
    }

    # A blocking answer Mirror marks max-age=0 ends at a segment boundary, a state that
    # lasts one part: shared for 100 ms, so that the requests waiting for it get this one
    # fetch (an object with no TTL sends each of them to Mirror in turn), and a player
    # that asks for it again at once (video.js's VHS does) gets the next state soon
    # instead of this one for seconds.
    if (bereq.url ~ "[?&]_HLS_msn=" && beresp.status == 200 && beresp.ttl <= 0s) {
        set beresp.ttl = 0.1s;
        set beresp.grace = 0s;
        return (deliver);
    }

    # beresp.ttl is Mirror's max-age (less any Age) as Varnish computed it; left as is.
    # Grace: a plain (non-blocking) playlist may be served a few seconds stale while a
    # fresh one is fetched (Mirror says stale-while-revalidate=TD; at least 3 s here).
    # A blocking playlist is never served stale, and neither is an error: a 404 or 503
    # for a name that exists a second later must not outlive its max-age.
    if (bereq.url ~ "\.m3u8(\?|$)" && bereq.url !~ "[?&]_HLS_msn=" && beresp.status == 200) {
        if (beresp.grace < 3s) {
            set beresp.grace = 3s;
        }
    } else {
        set beresp.grace = 0s;
    }
    return (deliver);
}

sub vcl_backend_error {
    # Mirror unreachable, sick or too slow: a short error that clients retry. Kept one
    # second so that the requests waiting for this fetch get it at once, instead of
    # each trying the backend again in turn.
    set beresp.http.Content-Type = "text/plain; charset=utf-8";
    set beresp.http.Cache-Control = "public, max-age=1";
    set beresp.http.Retry-After = "1";
    set beresp.ttl = 1s;
    set beresp.grace = 0s;
    synthetic("origin unavailable" + {"
"});
    return (deliver);
}
