/**
 * One queue for every operation that changes networks, endpoints or containers. Operations are a
 * few milliseconds each, so running them one at a time costs little and makes every invariant
 * (an address handed out once, a name taken once, rollback seeing a stable world) hold trivially.
 */
export class Lock {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn, fn);
    this.tail = result.catch(() => undefined);
    return result;
  }
}
