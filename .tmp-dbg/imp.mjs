const t0 = performance.now();
await import('@kubernetes/client-node');
console.log('client-node', Math.round(performance.now() - t0));
