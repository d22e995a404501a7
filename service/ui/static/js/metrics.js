// The client side of metric downsampling: one downsampled load, then only the new steps, merged down as they grow.

/** Halve a series by merging neighbours: the mean value at the later step (the server's bucket rule). */
export function halve(points) {
  const out = [];
  for (let i = 0; i < points.length; i += 2) {
    const pair = points.slice(i, i + 2);
    out.push({ step: pair[pair.length - 1].step, value: pair.reduce((sum, p) => sum + p.value, 0) / pair.length });
  }
  return out;
}

/**
 * Live metric series of one job: one downsampled load, then only the steps after the last one seen
 * (so a 100k-step run never re-reads its history), merged down whenever a series passes 2 x maxPoints.
 */
export class MetricSeries {
  constructor(api, jobId, { maxPoints = 400, names = null } = {}) {
    this.api = api;
    this.jobId = jobId;
    this.maxPoints = maxPoints;
    this.names = names; // only the charted series: a 100k-step run has ~15 metrics per step
    this.series = new Map();
    this.lastStep = null;
  }

  async refresh() {
    const query = { max_points: this.maxPoints, names: this.names };
    if (this.lastStep !== null) query.step_min = this.lastStep + 1;
    const body = await this.api(`/v1/jobs/${encodeURIComponent(this.jobId)}/metrics`, { query });
    let grew = false;
    for (const one of body.series) {
      if (one.points.length === 0) continue;
      let points = (this.series.get(one.name) || []).concat(one.points);
      while (points.length > 2 * this.maxPoints) points = halve(points);
      this.series.set(one.name, points);
      const last = one.points[one.points.length - 1].step;
      if (this.lastStep === null || last > this.lastStep) this.lastStep = last;
      grew = true;
    }
    return grew;
  }

  reset() {
    this.series.clear();
    this.lastStep = null;
  }

  pick(names) {
    return names.filter((name) => this.series.has(name)).map((name) => ({ name, points: this.series.get(name) }));
  }

  matching(prefixes) {
    const names = [...this.series.keys()].filter((name) => prefixes.some((prefix) => name.startsWith(prefix))).sort();
    return this.pick(names);
  }
}
