// TensorBoard's entry point for the Explain tab: TensorBoard loads this ES module into the tab's iframe (whose base
// URL is this plugin's route folder) and calls render(). The UI itself is explain.js, shared with the HTML report.
import { mount } from './explain.js';

async function getJson(route, params) {
  const response = await fetch(`${route}?${new URLSearchParams(params)}`);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || `${route}: HTTP ${response.status}`);
  return data;
}

export async function render() {
  const link = document.createElement('link');
  link.rel = 'stylesheet';
  link.href = 'style.css';
  document.head.append(link);
  const root = document.createElement('div');
  document.body.append(root);
  const api = { get: getJson, tile: params => `tile?${new URLSearchParams(params)}` };
  try {
    window.explainDashboard = await mount(root, api, { live: true });
  } catch (err) {
    root.textContent = `The Explain tab could not load its data: ${err.message}`;
  }
}
