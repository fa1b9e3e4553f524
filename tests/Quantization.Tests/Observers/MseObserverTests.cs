using CsCheck;

using Quantization.Tests.TestUtilities;

namespace Quantization.Tests.Observers;

public class MseObserverTests
{
    [Fact]
    public void Threshold_IsTheLastCandidateOfLeastError_ByTheDefinition()
    {
        Gen.Select(HistogramObserverTests.Batches, HistogramObserverTests.Schemes).Sample(
            (batches, scheme) =>
            {
                MseObserver observer = HistogramObserverTests.Fed(new MseObserver(scheme, binCount: 256), batches);
                float[] all = batches.SelectMany(b => b).ToArray();
                (long[] counts, double width, int used) = HistogramReference.Histogram(all, 256);
                if (width == 0)
                {
                    return;
                }

                float[] candidates = Enumerable.Range(1, used).Select(i => (float)Math.Min(i * width, observer.MaxMagnitude)).ToArray();
                double[] errors = candidates.Select(t => HistogramReference.SquaredError(counts[..used], width, t, scheme, all.Min(), all.Max())).ToArray();
                double min = errors.Min();
                Assert.Equal(candidates[Array.FindLastIndex(errors, e => e == min)], observer.ComputeThreshold());
            },
            iter: 100);
    }

    [Fact]
    public void HeavyTailedData_IsClipped_UniformDataIsNot()
    {
        float[] heavyTailed = HistogramObserverTests.HeavyTailed();
        MseObserver heavy = new(QuantizationScheme.Int8PerTensor());
        heavy.Observe(heavyTailed, [heavyTailed.Length]);
        Assert.InRange(heavy.ComputeThreshold(), 4f, 20f);

        // One outlier's squared clipping error can outweigh a small bulk's rounding error: then it is kept.
        float[] isolated = heavyTailed[..100_000].Append(400f).ToArray();
        MseObserver kept = new(QuantizationScheme.Int8PerTensor());
        kept.Observe(isolated, [isolated.Length]);
        Assert.True(kept.ComputeThreshold() > 200f);

        float[] uniform = Enumerable.Range(0, 100_001).Select(i => (i / 50_000f) - 1f).ToArray();
        MseObserver flat = new(QuantizationScheme.Int8PerTensor());
        flat.Observe(uniform, [uniform.Length]);
        Assert.InRange(flat.ComputeThreshold(), 0.95f, 1f);
    }

    [Fact]
    public void Golden_SingleBinOfMass_IsKeptWhole()
    {
        // All mass at one value: clipping below it costs (x - t)^2, so the last candidate (amax) wins.
        MseObserver observer = new(QuantizationScheme.Int8PerTensor(), binCount: 256);
        observer.Observe(Enumerable.Repeat(-2.5f, 50).ToArray(), [50]);
        Assert.Equal(2.5f, observer.ComputeThreshold());
        Assert.Equal(new ScaleAndZeroPoint((float)(5.0 / 254), 0), observer.ComputeParameters()[0]);
    }
}
