import { defineConfig } from 'vitest/config';

// Integration and end-to-end tests own real processes and network namespaces, so files run one at
// a time. The end-to-end lab gets its own run directory and namespace prefix, so `npm test` never
// touches a lab the user left up (`rl-*`, /run/racklb-lab); set both variables to run several
// suites side by side.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    env: {
      RACKLB_LAB_RUN_DIR: process.env.RACKLB_LAB_RUN_DIR ?? '/run/racklb-test-lab',
      RACKLB_LAB_NETNS_PREFIX: process.env.RACKLB_LAB_NETNS_PREFIX ?? 'rlt-',
    },
  },
});
