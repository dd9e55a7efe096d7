import type { DescMessage, DescService, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import { create, fromBinary, isMessage, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";

/**
 * A @grpc/grpc-js service definition for a protobuf-es service descriptor, so grpc-js
 * clients (the sidecar's uplink, users' code) speak the same messages as the generated
 * Connect stubs without a second code generator.
 */
export function grpcServiceDefinition(service: DescService): grpc.ServiceDefinition {
  const def: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methods) {
    def[method.localName] = {
      path: `/${service.typeName}/${method.name}`,
      requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
      responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
      requestSerialize: serializer(method.input) as (v: unknown) => Buffer,
      requestDeserialize: deserializer(method.input),
      responseSerialize: serializer(method.output) as (v: unknown) => Buffer,
      responseDeserialize: deserializer(method.output),
    };
  }
  return def;
}

/** Accepts a message or a plain init object ({ pageSize: 5 }), as grpc-js users write them. */
function serializer<D extends DescMessage>(desc: D) {
  return (value: MessageShape<D> | MessageInitShape<D>): Buffer =>
    Buffer.from(toBinary(desc, isMessage(value, desc) ? value : create(desc, value)));
}

function deserializer<D extends DescMessage>(desc: D) {
  return (bytes: Buffer): MessageShape<D> => fromBinary(desc, bytes);
}

/** A grpc-js client constructor for the service (methods named like the Connect stubs). */
export function grpcClientConstructor(service: DescService): grpc.ServiceClientConstructor {
  return grpc.makeGenericClientConstructor(grpcServiceDefinition(service), service.name);
}

/** Parses "HOST:PORT", "http://HOST:PORT" or "[::1]:PORT" into a grpc-js target. */
export function grpcTarget(url: string): string {
  const trimmed = url.replace(/^(grpc|http|h2c):\/\//, "").replace(/\/+$/, "");
  return trimmed;
}
