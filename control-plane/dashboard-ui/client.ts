import { type Client, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AdminService } from "../../gen/aigw/v1/admin_pb.js";
import { FeedService } from "../../gen/aigw/v1/feed_pb.js";

/** Where the tab keeps the admin token (the login page puts it there too). */
export const TOKEN_KEY = "aigw-token";

const bearer: Interceptor = (next) => (req) => {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) req.header.set("authorization", `Bearer ${token}`);
  return next(req);
};

// The Connect protocol over the page's own origin (the HTTP/1.1 listener), binary protobuf:
// the generated messages both ways, server streaming (Feed.Watch) included.
const transport = createConnectTransport({
  baseUrl: location.origin,
  useBinaryFormat: true,
  interceptors: [bearer],
});

export const admin: Client<typeof AdminService> = createClient(AdminService, transport);
export const feed: Client<typeof FeedService> = createClient(FeedService, transport);
