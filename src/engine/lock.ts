/**
 * One queue for every operation that changes networks, endpoints or containers. Operations are a
 * few milliseconds each, so running them one at a time costs little and makes every invariant
 * (an address handed out once, a name taken once, rollback seeing a stable world) hold trivially.
 */
export class Lock {
  private tail: Promise<unknown> = Promise.resolve();
  /**
   * Operations finished so far. Every change to the records happens inside one, so what was
   * derived from them (the resolver's name index) is current while this number stays the same.
   */
  generation = 0;

  run<T>(fn: () => Promise<T>): Promise<T> {
    const op = async () => {
      try {
        return await fn();
      } finally {
        this.generation++;
      }
    };
    const result = this.tail.then(op, op);
    this.tail = result.catch(() => undefined);
    return result;
  }
}
