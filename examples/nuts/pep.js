// A knooppunt-shaped PEP in NGINX njs (0.7.9, Debian bookworm's libnginx-mod-http-js) in
// front of Sluis's `/pdp` door: what nuts-knooppunt's NGINX PEP does, written for Sluis
// from the description in docs/nuts.md (not knooppunt's code). Used by pep-nginx.conf:
//
//   1. take the access token (`Authorization: Bearer` or `DPoP`); none: 401;
//   2. introspect it at the Nuts node (`POST .../accesstoken/introspect`, form `token=`);
//      inactive: 401;
//   3. a token bound to a key (`cnf.jkt`) must come as `DPoP` with a proof, which the
//      node checks (`POST .../dpop/validate`); refused: 401;
//   4. ask the PDP with `{"input": {subject, request, context}}`: the introspection
//      claims, the request base-relative, the data holder this gateway serves;
//   5. `allow: true`: on to the FHIR server; `allow: false`: 403; anything else (the PDP
//      down, a non-200, an answer that is not JSON): 502, never an allow.
//
// The node and the PDP are reached through internal locations (`/_pep/...`), so their
// addresses, TLS and timeouts are NGINX configuration. Nothing here logs a token, a proof
// or a BSN.

// A body as text (`requestText`/`responseText` warn as deprecated in njs 0.7.9).
function text(buffer) {
    return buffer ? buffer.toString() : '';
}

function fail(r, status, challenge) {
    if (challenge) {
        r.headersOut['WWW-Authenticate'] = challenge;
    }
    r.return(status);
}

// `Bearer x` / `DPoP x` → {scheme, token}; anything else → null.
function credentials(r) {
    const header = r.headersIn.Authorization || '';
    const match = /^(Bearer|DPoP)[ ]+([^ ]+)$/i.exec(header);
    if (!match) {
        return null;
    }
    return {scheme: match[1].toLowerCase(), token: match[2]};
}

// The request headers as name (lower case) → values, without the credentials: the PDP
// gets the introspection answer, never the token or its proof.
function headerMap(r) {
    const headers = {};
    const raw = r.rawHeadersIn;
    for (let i = 0; i < raw.length; i++) {
        const key = raw[i][0].toLowerCase();
        if (key === 'authorization' || key === 'dpop') {
            continue;
        }
        headers[key] = headers[key] || [];
        headers[key].push(raw[i][1]);
    }
    return headers;
}

async function postJson(r, location, body) {
    const reply = await r.subrequest(location, {method: 'POST', body: JSON.stringify(body)});
    if (reply.status !== 200) {
        throw new Error(location + ' answered ' + reply.status);
    }
    return JSON.parse(text(reply.responseBuffer));
}

async function authorize(r) {
    const given = credentials(r);
    if (!given) {
        return fail(r, 401, 'Bearer');
    }
    let claims;
    let path;
    try {
        const reply = await r.subrequest('/_pep/introspect', {
            method: 'POST',
            body: 'token=' + encodeURIComponent(given.token),
        });
        if (reply.status !== 200) {
            throw new Error('introspection answered ' + reply.status);
        }
        claims = JSON.parse(text(reply.responseBuffer));
        if (claims.active !== true) {
            return fail(r, 401, 'Bearer error="invalid_token"');
        }
        const jkt = claims.cnf && claims.cnf.jkt;
        if (jkt) {
            const proof = r.headersIn.DPoP;
            if (given.scheme !== 'dpop' || !proof) {
                return fail(r, 401, 'DPoP error="invalid_token"');
            }
            // The URL the client used, without its query (RFC 9449 §4.3 `htu`).
            const url = r.variables.scheme + '://' + r.headersIn.Host
                + r.variables.request_uri.split('?')[0];
            const check = await postJson(r, '/_pep/dpop', {
                dpop_proof: proof, method: r.method, thumbprint: jkt,
                token: given.token, url: url,
            });
            if (check.valid !== true) {
                return fail(r, 401, 'DPoP error="invalid_dpop_proof"');
            }
        } else if (given.scheme !== 'bearer') {
            return fail(r, 401, 'Bearer error="invalid_token"');
        }

        const base = r.variables.pep_fhir_base_path || '';
        path = r.uri.startsWith(base) ? r.uri.slice(base.length) : r.uri;
        const input = {
            subject: claims,
            request: {
                method: r.method,
                protocol: 'HTTP/' + r.httpVersion,
                path: path === '' ? '/' : path,
                query: r.variables.args || '',
                header: headerMap(r),
                body: text(r.requestBuffer),
            },
            context: {
                connection_type_code: 'hl7-fhir-rest',
                data_holder_organization_id: r.variables.pep_data_holder_ura || '',
                data_holder_facility_type: r.variables.pep_data_holder_facility_type || '',
                patient_bsn: '',
            },
        };
        const answer = await postJson(r, '/_pep/pdp', {input: input});
        if (answer.allow === true) {
            return r.internalRedirect('@fhir');
        }
        if (answer.allow === false) {
            return fail(r, 403);
        }
        throw new Error('the PDP answered without `allow`');
    } catch (e) {
        r.error('pep: ' + e.message);
        return fail(r, 502);
    }
}

export default {authorize};
