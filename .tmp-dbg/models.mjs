import { Deployment } from 'kubernetes-models/apps/v1';
import { CustomResourceDefinition } from 'kubernetes-models/apiextensions.k8s.io/v1';
import { Service as KnService } from '@kubernetes-models/knative/serving.knative.dev/v1';
import { Trigger } from '@kubernetes-models/knative/eventing.knative.dev/v1';
import { ApiServerSource, PingSource } from '@kubernetes-models/knative/sources.knative.dev/v1';
import { ScaledObject, TriggerAuthentication } from '@kubernetes-models/keda/keda.sh/v1alpha1';
import { formats } from '@kubernetes-models/validate';
import Ajv from 'ajv';
console.log(typeof Deployment, typeof KnService, typeof ScaledObject, Object.keys(formats).length, typeof Ajv);
const d = new Deployment({ metadata: { name: 'x' }, spec: { selector: {}, template: { spec: { containers: [{ name: 'a', image: 'b', foo: 1 }] } } } });
try { d.validate(); console.log('valid (additional prop not rejected?)'); } catch (e) { console.log('ERR', e.message); }
const d2 = new Deployment({ metadata: { name: 'x' }, spec: { selector: {}, template: { spec: { containers: [{ name: 'a', image: 'b', ports: [{containerPort: 'x'}] }] } } } });
try { d2.validate(); console.log('valid'); } catch (e) { console.log('ERR', e.message); }
