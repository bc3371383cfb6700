import type { FirewallState } from "./model.js";
import {
  desiredElements,
  renderElementsDiff,
  renderElementsFull,
  renderTeardown,
  type SetKey,
} from "./render.js";

/**
 * Applies desired firewall state. exec runs one nft text batch atomically and throws on failure
 * (src/kernel/nft.ts's runNft in the daemon), so after a failure the kernel still holds the last
 * applied elements, and remembering those keeps the next diff correct.
 */
export class Firewall {
  #applied: Record<SetKey, string[]> | undefined;

  constructor(private readonly exec: (nftText: string) => void) {}

  /** Start-up: replaces our tables with the full ruleset for state, atomically. */
  load(state: FirewallState): void {
    const want = desiredElements(state);
    this.exec(renderElementsFull(want));
    this.#applied = want;
  }

  /**
   * Sends only the element changes since the last applied state. Before any load there is nothing
   * to diff against (our tables may not even exist), so that first call loads in full.
   */
  update(state: FirewallState): void {
    if (this.#applied === undefined) {
      this.load(state);
      return;
    }
    const want = desiredElements(state);
    const text = renderElementsDiff(this.#applied, want);
    if (text !== "") this.exec(text);
    this.#applied = want;
  }

  /** Deletes our tables, whether or not they exist. */
  teardown(): void {
    this.exec(renderTeardown());
    this.#applied = undefined;
  }
}
