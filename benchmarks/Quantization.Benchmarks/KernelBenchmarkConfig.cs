using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;

namespace Quantization.Benchmarks;

/// <summary>Shows the Ratio column against <see cref="KernelBenchmark.MemoryCopy"/> with enough digits to compare runs.</summary>
public sealed class KernelBenchmarkConfig : ManualConfig
{
    public KernelBenchmarkConfig()
    {
        SummaryStyle = SummaryStyle.Default.WithRatioStyle(RatioStyle.Value);
        AddColumn(StatisticColumn.Median);
    }
}
