/**
 * Collects the undo step of each step done so far; on failure they run newest first. Undo steps
 * that fail are reported to `onError` but do not hide the original error.
 */
export class Undo {
  private readonly steps: (() => Promise<void> | void)[] = [];

  push(step: () => Promise<void> | void): void {
    this.steps.push(step);
  }

  async run(onError: (err: unknown) => void): Promise<void> {
    while (this.steps.length > 0) {
      const step = this.steps.pop();
      try {
        await step?.();
      } catch (err) {
        onError(err);
      }
    }
  }
}
