import type { AttemptResult } from "./retry-policy.js";

/**
 * What the main thread hands a delivery worker for one attempt. Plain data only: it is
 * structured-cloned into a worker thread.
 */
export interface DeliveryTask {
  deliveryId: string;
  url: string;
  /** The JSON body, rendered once on the main thread; signed and sent byte for byte. */
  body: string;
  /** The event id: webhook-id, the same on every attempt. */
  webhookId: string;
  /** Secrets of the endpoint's valid keys (newest first); one signature each. */
  secrets: string[];
  /** security.signature_header: the signature is sent again under this name. */
  signatureHeader: string;
  /** Bound on the whole exchange: connect, headers and body. */
  timeoutMs: number;
  requireHttps: boolean;
  allowedNetworks: string[];
  userAgent: string;
}

export type DeliveryResult = AttemptResult;
