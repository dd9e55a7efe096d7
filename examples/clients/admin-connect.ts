/**
 * The Admin API from your own code with the generated stubs (gen/) and Connect over
 * HTTP/1.1: list endpoints, send a test event, and show the deliveries it made.
 *
 *   npx tsx examples/clients/admin-connect.ts [http://127.0.0.1:7080]
 */
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AdminService, DeliveryStatus } from "../../gen/aigw/v1/admin_pb.js";

const baseUrl = process.argv[2] ?? process.env.AIGW_ADMIN_URL ?? "http://127.0.0.1:7080";
const token = process.env.AIGW_ADMIN_TOKEN;
const admin = createClient(AdminService, createConnectTransport({ baseUrl, httpVersion: "1.1" }));
const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};

const { endpoints } = await admin.listEndpoints({}, { headers });
for (const e of endpoints) console.log(`${e.name}\t${e.enabled ? "enabled" : "disabled"}\t${e.url}`);

const sent = await admin.sendTestEvent({}, { headers });
console.log(`test event ${sent.event?.id} → ${sent.deliveryIds.length} deliveries`);

const { deliveries } = await admin.listDeliveries({ eventId: sent.event?.id ?? "" }, { headers });
for (const d of deliveries)
  console.log(`${d.id}\t${d.endpoint}\t${DeliveryStatus[d.status]}\tattempts=${d.attemptCount}`);
