// What of Apache ECharts the report page uses, bundled by build.sh into one minified script
// that defines the global `echarts`. Add a chart or component here (and rebuild) before using
// it in ../report.js.
import * as echarts from 'echarts/core';
import { BarChart, HeatmapChart, LineChart, SankeyChart } from 'echarts/charts';
import {
  GridComponent,
  LegendComponent,
  TooltipComponent,
  VisualMapComponent,
} from 'echarts/components';
// SVG, not canvas: vector output in print and in PDFs saved from the browser.
import { SVGRenderer } from 'echarts/renderers';

echarts.use([
  BarChart,
  HeatmapChart,
  LineChart,
  SankeyChart,
  GridComponent,
  LegendComponent,
  TooltipComponent,
  VisualMapComponent,
  SVGRenderer,
]);

export { init, version } from 'echarts/core';
