import { type Event, EventType } from "../../gen/aigw/v1/events_pb.js";
import type { AsyncRequest } from "../async/async-requests.js";
import type { ExchangeOptions } from "../proxy/exchange.js";

/** What one request needs of its events beyond the subscriptions' wanted types. */
export interface RequestEventNeeds {
  /** The settings' wanted event types. */
  wanted: ReadonlySet<EventType>;
  /** x-aigw-webhook-url: stamped on every event; its completion and error are always built. */
  webhookUrl: string | undefined;
  /** A `Prefer: respond-async` call: its completion carries the response; completion and error always built. */
  asyncRequest: AsyncRequest | undefined;
  /** Counts the call's tokens against gateway tokens limits (its completion is then built even if unwanted, but not sent). */
  meterTokens: ((tokens: number) => void) | undefined;
}

/** The Exchange options for a request, or undefined (the common case) when it needs nothing special. */
export function requestEventOptions(needs: RequestEventNeeds): ExchangeOptions | undefined {
  const { wanted, webhookUrl, asyncRequest, meterTokens } = needs;
  const ownsResult = webhookUrl !== undefined || asyncRequest !== undefined;
  if (!ownsResult && meterTokens === undefined) return undefined;
  let wantedEventTypes: ReadonlySet<EventType> | undefined;
  if (ownsResult) wantedEventTypes = withResults(wanted);
  else if (!wanted.has(EventType.COMPLETION)) wantedEventTypes = withResults(wanted);
  const completionWanted = ownsResult || wanted.has(EventType.COMPLETION);
  return {
    ...(wantedEventTypes ? { wantedEventTypes } : {}),
    onEvent: (event: Event): boolean => {
      const payload = event.payload;
      if (payload.case === "completion") {
        meterTokens?.(payload.value.tokensUsed);
        if (!completionWanted) return false;
        if (asyncRequest) {
          payload.value.async = true;
          payload.value.responseJson = asyncRequest.bodyJson ?? "";
        }
      } else if (payload.case === "error" && !ownsResult && !wanted.has(EventType.ERROR)) {
        return false;
      }
      if (webhookUrl !== undefined) event.webhookUrl = webhookUrl;
      return true;
    },
  };
}

/** The settings' wanted types plus completion and error, built once per wanted set. */
const resultsCache = new WeakMap<ReadonlySet<EventType>, ReadonlySet<EventType>>();

function withResults(wanted: ReadonlySet<EventType>): ReadonlySet<EventType> {
  let set = resultsCache.get(wanted);
  if (!set) {
    set = new Set([...wanted, EventType.COMPLETION, EventType.ERROR]);
    resultsCache.set(wanted, set);
  }
  return set;
}
