/** Who test events come from, so receivers can tell them from real traffic (an org's keep its org_id). */
export const TEST_EVENT_ORG = "test";
export const TEST_EVENT_APP = "aigw-test";

/**
 * Whether an event is a test event (aigw endpoints send-test, the dashboard): its usage
 * is the example's, not spend, so token and cost figures (metrics, series) leave it out.
 */
export function isTestEvent(event: { app: string }): boolean {
  return event.app === TEST_EVENT_APP;
}
