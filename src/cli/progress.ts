/**
 * A one-line progress display on a terminal (rewritten in place with \r). On anything
 * that is not a TTY it prints nothing, so logs and pipes stay clean.
 */
export class Progress {
  readonly #stream: NodeJS.WriteStream;
  #shown = false;

  private constructor(stream: NodeJS.WriteStream) {
    this.#stream = stream;
  }

  /** A display on `stream`, or undefined when it is not a terminal. */
  static forStream(stream: NodeJS.WriteStream): Progress | undefined {
    return stream.isTTY ? new Progress(stream) : undefined;
  }

  update(text: string): void {
    this.#stream.write(`\r\x1b[2K${text}`);
    this.#shown = true;
  }

  clear(): void {
    if (!this.#shown) return;
    this.#stream.write('\r\x1b[2K');
    this.#shown = false;
  }
}
