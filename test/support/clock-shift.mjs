// Preloaded into a process under test (NODE_OPTIONS=--import=…): shifts its wall clock
// (Date, Date.now) by the milliseconds written in the file $AIGW_TEST_CLOCK_SHIFT_FILE, read
// every 20 ms. That is a wall clock step as NTP or an operator makes one: monotonic time
// (performance.now, process.hrtime) does not move, as on a real machine.
import { readFileSync } from "node:fs";

const file = process.env.AIGW_TEST_CLOCK_SHIFT_FILE;
if (file) {
  let shift = 0;
  const read = () => {
    try {
      shift = Number(readFileSync(file, "utf8")) || 0;
    } catch {
      // no file yet: no shift
    }
  };
  read();
  setInterval(read, 20).unref();
  const RealDate = Date;
  const realNow = RealDate.now.bind(RealDate);
  class ShiftedDate extends RealDate {
    constructor(...args) {
      if (args.length === 0) super(realNow() + shift);
      else super(...args);
    }
    static now() {
      return realNow() + shift;
    }
  }
  globalThis.Date = ShiftedDate;
}
