import type http from "node:http";
import type http2 from "node:http2";

type Handler = (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void;

/**
 * Writes `grpc-message` as the gRPC spec percent-encodes it: only bytes outside printable
 * ASCII, and "%". connect-node encodes it with encodeURIComponent, which also encodes
 * `: / ? # & = + , ; @ $`, and @grpc/grpc-js (the sidecar's client, and many users') decodes
 * it with decodeURI, which leaves those encoded: "hello.sidecar_id: required" reached a
 * grpc-js client as "hello.sidecar_id%3A required". Both clients read this form as written.
 */
export function grpcMessagesAsSpecified(handler: Handler): Handler {
  return (req, res) => {
    const addTrailers = res.addTrailers.bind(res);
    res.addTrailers = (trailers: http.OutgoingHttpHeaders) => addTrailers(respecified(trailers));
    handler(req, res);
  };
}

function respecified(headers: http.OutgoingHttpHeaders): http.OutgoingHttpHeaders {
  const value = headers["grpc-message"];
  if (typeof value !== "string") return headers;
  return { ...headers, "grpc-message": encodeGrpcMessage(decodeLoosely(value)) };
}

function decodeLoosely(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

/** Percent-encoding of the gRPC spec (PROTOCOL-HTTP2.md, "Status-Message"). */
export function encodeGrpcMessage(message: string): string {
  let out = "";
  for (const byte of Buffer.from(message, "utf8")) {
    out +=
      byte >= 0x20 && byte <= 0x7e && byte !== 0x25
        ? String.fromCharCode(byte)
        : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}
