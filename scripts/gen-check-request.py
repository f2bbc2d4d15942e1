#!/usr/bin/env python3
"""Hand-encode an envoy.service.auth.v3.CheckRequest as a gRPC message, stdlib only.

The output is the exact HTTP/2 request body of a unary gRPC call to
/envoy.service.auth.v3.Authorization/Check: a 5-byte gRPC frame prefix
(compressed flag 0 + big-endian u32 length) followed by the protobuf bytes.
It is meant for `h2load --data=FILE` (see scripts/load.sh), so Sluis and the
no-op server can be loaded directly, without Envoy in between.

The message mimics what Envoy 1.40 sends for a plain HTTP/1.1 request:
attributes.source/destination socket addresses, attributes.request.time and
attributes.request.http {id, method, headers (incl. the :authority, :method,
:path, :scheme pseudo-headers), path, host, scheme, protocol}.

Field numbers are from envoy/service/auth/v3/attribute_context.proto and
external_auth.proto (the same ones envoy-types 0.7 is generated from).

Usage:
  gen-check-request.py -o check.bin --path /api/items --host api.example.com \
      --token "$TOKEN" [--method GET] [--header name:value ...]
  gen-check-request.py --decode-response resp.bin
      prints the google.rpc.Status code of a gRPC-framed CheckResponse
      (0 = OK/allowed, 7 = PERMISSION_DENIED, 16 = UNAUTHENTICATED, ...).
"""

import argparse
import struct
import sys
import time


def varint(n: int) -> bytes:
    if n < 0:
        n &= (1 << 64) - 1  # negative int32/int64 are encoded as 10-byte two's complement
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    return varint((field << 3) | wire_type)


def f_bytes(field: int, payload) -> bytes:
    """Length-delimited field (string, bytes, embedded message)."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    return tag(field, 2) + varint(len(payload)) + payload


def f_varint(field: int, n: int) -> bytes:
    return tag(field, 0) + varint(n)


def f_string_if(field: int, s: str) -> bytes:
    # proto3: empty strings are not serialized
    return f_bytes(field, s) if s else b""


def socket_address(ip: str, port: int) -> bytes:
    # config.core.v3.SocketAddress {address = 2, port_value = 3}
    sa = f_bytes(2, ip) + f_varint(3, port)
    # config.core.v3.Address {socket_address = 1}
    return f_bytes(1, sa)


def peer(ip: str, port: int) -> bytes:
    # AttributeContext.Peer {address = 1}
    return f_bytes(1, socket_address(ip, port))


def check_request(args) -> bytes:
    headers = {
        ":authority": args.host,
        ":method": args.method,
        ":path": args.path,
        ":scheme": args.scheme,
        "user-agent": "sluis-load/1",
        "accept": "*/*",
        "x-forwarded-proto": args.scheme,
        "x-request-id": "00000000-0000-4000-8000-000000000000",
    }
    if args.token:
        headers["authorization"] = f"Bearer {args.token}"
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep:
            sys.exit(f"--header must be name:value, got {h!r}")
        headers[name.strip().lower()] = value.strip()

    http = b""
    http += f_string_if(1, "1234567890")  # id
    http += f_string_if(2, args.method)  # method
    for k, v in headers.items():  # headers: map<string,string> = repeated entry {key=1, value=2}
        http += f_bytes(3, f_bytes(1, k) + f_bytes(2, v))
    http += f_string_if(4, args.path)  # path (with query, as Envoy sends it)
    http += f_string_if(5, args.host)  # host
    http += f_string_if(6, args.scheme)  # scheme
    http += f_string_if(10, "HTTP/1.1")  # protocol

    now = time.time()
    ts = f_varint(1, int(now)) + f_varint(2, int((now % 1) * 1e9))  # google.protobuf.Timestamp
    request = f_bytes(1, ts) + f_bytes(2, http)  # AttributeContext.Request {time=1, http=2}

    attrs = b""
    attrs += f_bytes(1, peer(args.source_ip, 40000))  # source
    attrs += f_bytes(2, peer("127.0.0.1", 8080))  # destination
    attrs += f_bytes(4, request)  # request
    return f_bytes(1, attrs)  # CheckRequest {attributes = 1}


def grpc_frame(msg: bytes) -> bytes:
    return struct.pack(">BI", 0, len(msg)) + msg


def read_varint(buf: bytes, i: int):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def fields(buf: bytes):
    """Yield (field_number, wire_type, value) of a protobuf message."""
    i = 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        field, wt = key >> 3, key & 7
        if wt == 0:
            val, i = read_varint(buf, i)
        elif wt == 2:
            n, i = read_varint(buf, i)
            val, i = buf[i : i + n], i + n
        elif wt == 1:
            val, i = buf[i : i + 8], i + 8
        elif wt == 5:
            val, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wt}")
        yield field, wt, val


def decode_response(path: str) -> int:
    data = open(path, "rb").read()
    if len(data) < 5:
        print("no gRPC message in response (empty body: check grpc-status/grpc-message)")
        return 2
    flag, length = struct.unpack(">BI", data[:5])
    if flag != 0:
        print("compressed gRPC message: not supported")
        return 2
    msg = data[5 : 5 + length]
    code = 0  # proto3 default when CheckResponse.status.code is absent
    kind = "none"
    for field, _, val in fields(msg):
        if field == 1:  # status: google.rpc.Status {code = 1}
            for f2, _, v2 in fields(val):
                if f2 == 1:
                    code = v2 if v2 < (1 << 31) else v2 - (1 << 64)
        elif field == 2:
            kind = "denied_response"
        elif field == 3:
            kind = "ok_response"
        elif field == 5:
            kind = "error_response"
    print(f"status.code={code} http_response={kind}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", help="write the gRPC-framed CheckRequest here")
    p.add_argument("--method", default="GET")
    p.add_argument("--path", default="/")
    p.add_argument("--host", default="127.0.0.1:8080")
    p.add_argument("--scheme", default="http")
    p.add_argument("--token", default="", help="bearer token (sent as 'authorization: Bearer TOKEN')")
    p.add_argument("--header", action="append", default=[], help="extra request header name:value")
    p.add_argument("--source-ip", default="127.0.0.1")
    p.add_argument("--decode-response", metavar="FILE", help="decode a gRPC-framed CheckResponse")
    args = p.parse_args()

    if args.decode_response:
        return decode_response(args.decode_response)
    if not args.output:
        p.error("-o/--output is required")
    frame = grpc_frame(check_request(args))
    with open(args.output, "wb") as f:
        f.write(frame)
    print(f"wrote {len(frame)} bytes to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
