using CsCheck;

using Quantization.Tests.TestUtilities;

namespace Quantization.Tests.Observers;

public class PercentileObserverTests
{
    [Fact]
    public void Threshold_IsTheLeftEdgeOfTheBinOfTheOrderStatistic()
    {
        // The first bin whose cumulative count reaches p holds the r-th smallest |x|, r the smallest rank with r / N >= p.
        Gen.Select(HistogramObserverTests.Batches, HistogramObserverTests.BinCounts, Gen.OneOf(50.0, 90.0, 99.0, 99.9, 99.999, 100.0)).Sample(
            (batches, bins, percentile) =>
            {
                PercentileObserver observer = HistogramObserverTests.Fed(new PercentileObserver(QuantizationScheme.Int8PerTensor(), percentile, bins), batches);
                double[] sorted = batches.SelectMany(b => b).Select(v => Math.Abs((double)v)).Order().ToArray();
                if (sorted.Length == 0)
                {
                    return;
                }

                int rank = Enumerable.Range(1, sorted.Length).First(r => (double)r / sorted.Length >= percentile / 100);
                double width = observer.BinWidth;
                float expected = width == 0 ? 0f : (float)Math.Min(Math.Floor(sorted[rank - 1] / width) * width, sorted[^1]);
                Assert.Equal(expected, observer.ComputeThreshold());
            },
            iter: 300);
    }

    [Fact]
    public void Golden_DefaultPercentile_OneOutlierInTwoHundredThousand_IsClipped_TwoInOneHundredThousand_AreKept()
    {
        // 2048 bins, amax 100: width 2^-4 (100 < 2048 / 16 = 128, 100 >= 64); 0.5 sits in bin 8, 100 in bin 1600.
        PercentileObserver clipped = new(QuantizationScheme.Int8PerTensor());
        float[] data = Enumerable.Repeat(0.5f, 199_999).Append(-100f).ToArray();
        clipped.Observe(data, [data.Length]);
        Assert.Equal(1.0 / 16, clipped.BinWidth);
        Assert.Equal(0.5f, clipped.ComputeThreshold()); // 199,999 / 200,000 >= 0.99999: left edge of bin 8
        Assert.Equal(new ScaleAndZeroPoint((float)(1.0 / 254), 0), clipped.ComputeParameters()[0]);

        PercentileObserver kept = new(QuantizationScheme.Int8PerTensor());
        data = Enumerable.Repeat(0.5f, 99_998).Concat([100f, 100f]).ToArray();
        kept.Observe(data, [data.Length]);
        Assert.Equal(100f, kept.ComputeThreshold()); // 99,998 / 100,000 < 0.99999: left edge of bin 1600 = 100

        // ORT's left edge: 100 % stops at the left edge of amax's bin (width 2^-11 for amax 0.9), below amax.
        PercentileObserver all = new(QuantizationScheme.UInt8PerTensorAsymmetric(), 100);
        all.Observe([0.1f, 0.9f], [2]);
        Assert.Equal(1.0 / 2048, all.BinWidth);
        Assert.Equal((float)(Math.Floor(0.9f * 2048.0) / 2048), all.ComputeThreshold());
        Assert.True(all.ComputeThreshold() < 0.9f);
    }

    [Fact]
    public void KnownDistribution_Gaussian_99Percent_IsNear2Point576Sigma()
    {
        Random random = new(12345);
        float[] data = new float[1_000_000];
        for (int i = 0; i < data.Length; i++)
        {
            data[i] = (float)(Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble()));
        }

        PercentileObserver observer = new(QuantizationScheme.Int8PerTensor(), 99);
        observer.Observe(data, [1000, 1000]);

        // The 99th percentile of |N(0, 1)| is 2.5758; a million samples put it within about 0.01.
        Assert.InRange(observer.ComputeThreshold(), 2.5758 - 0.02, 2.5758 + 0.01);
    }
}
