/**
 * The live feed from @grpc/grpc-js (any gRPC client works: the control plane speaks gRPC
 * on its --grpc port). Prints error events as they are stored.
 *
 *   npx tsx examples/clients/watch-grpc.ts [127.0.0.1:7070]
 */
import * as grpc from "@grpc/grpc-js";
import { EventType } from "../../gen/aigw/v1/events_pb.js";
import type { WatchResponse } from "../../gen/aigw/v1/feed_pb.js";
import { FeedService } from "../../gen/aigw/v1/feed_pb.js";
import { grpcClientConstructor } from "../../common/grpc.js";
import { webhookBody } from "../../common/webhook-body.js";

const target = process.argv[2] ?? "127.0.0.1:7070";
const Feed = grpcClientConstructor(FeedService);
const client = new Feed(target, grpc.credentials.createInsecure());
const metadata = new grpc.Metadata();
if (process.env.AIGW_ADMIN_TOKEN) metadata.set("authorization", `Bearer ${process.env.AIGW_ADMIN_TOKEN}`);

const call = (
  client as unknown as { watch(req: object, md: grpc.Metadata): grpc.ClientReadableStream<WatchResponse> }
).watch({ eventTypes: [EventType.ERROR] }, metadata);
call.on("data", (res: WatchResponse) => {
  if (res.event) console.log(JSON.stringify(webhookBody(res.event)));
});
call.on("error", (err: grpc.ServiceError) => {
  if (err.code !== grpc.status.CANCELLED) console.error(`feed ended: ${err.message}`);
});
process.once("SIGINT", () => {
  call.cancel();
  client.close();
});
