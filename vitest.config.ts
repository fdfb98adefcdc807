import { defineConfig } from 'vitest/config';

// Integration and end-to-end tests own real processes and network namespaces, so files run one at a time.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
  },
});
