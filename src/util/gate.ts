/**
 * A counting gate: at most `limit` holders at once, the rest wait in arrival order.
 *
 * Why corral needs one: 200 startTask calls made in one turn each go through a chain of short
 * off-loop steps (record write, group mkdirs, spawn). With all of them in flight, their completions
 * arrive together and the loop runs a hundred continuations in one poll phase (≈0.3–0.5 ms each),
 * which is the loop delay an embedding agent sees. Admitting a few at a time keeps each phase short;
 * the total hardly changes, because the kernel serialises v1 cgroup joins anyway.
 */
export class Gate {
  private held = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly limit: number) {}

  async acquire(): Promise<() => void> {
    if (this.held >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.held++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) next(); // the slot passes straight to the next waiter
      else this.held--;
    };
  }
}
