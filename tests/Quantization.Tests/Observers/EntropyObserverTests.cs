using CsCheck;

using Quantization.Tests.TestUtilities;

namespace Quantization.Tests.Observers;

public class EntropyObserverTests
{
    [Fact]
    public void Threshold_IsTheLastCandidateOfLeastDivergence_ByTheDefinition()
    {
        // Small histograms (256 bins), compared with a direct evaluation of the documented KL over every candidate.
        Gen<float[]> data = Gen.Frequency(
            (2, Gen.Float[-1f, 1f].Array[1, 400]),
            (2, Gen.Int[0, 40].Select(k => k / 40f).Array[1, 400]),
            (1, Gen.Select(Gen.Float[-1f, 1f].Array[1, 400], Gen.Float[5f, 1000f]).Select(t => t.Item1.Append(t.Item2).ToArray())));
        Gen.Select(data, Gen.Bool).Sample(
            (values, int4) =>
            {
                QuantizedType type = int4 ? QuantizedType.Int4 : QuantizedType.Int8;
                EntropyObserver observer = new(new QuantizationScheme(type, symmetric: true, QuantizationGranularity.PerTensor), binCount: 256);
                observer.Observe(values, [values.Length]);
                (long[] counts, double width, int used) = HistogramReference.Histogram(values, 256);
                if (width == 0)
                {
                    Assert.Equal(0f, observer.ComputeThreshold());
                    return;
                }

                int q = int4 ? 8 : 128;
                Assert.Equal(q, observer.QuantizedBinCount);
                long[] bins = counts[..used];
                double[] divergences = Enumerable.Range(q, used - q + 1).Select(i => HistogramReference.Divergence(bins, i, q)).ToArray();
                double min = divergences.Min();
                int expected = q + Array.FindLastIndex(divergences, d => d <= min + EntropyObserver.TieTolerance);
                Assert.Equal((float)Math.Min(expected * width, observer.MaxMagnitude), observer.ComputeThreshold());
            },
            iter: 100);
    }

    [Fact]
    public void Threshold_OnLargeCounts_StillFollowsTheDefinition()
    {
        // 200,000 heavy-tailed values in 256 bins: counts in the tens of thousands, where the O(q) evaluation's sums are
        // largest against the divergence.
        float[] values = HistogramObserverTests.HeavyTailed()[..200_000];
        EntropyObserver observer = new(QuantizationScheme.Int8PerTensor(), binCount: 256);
        observer.Observe(values, [values.Length]);
        (long[] counts, double width, int used) = HistogramReference.Histogram(values, 256);
        double[] divergences = Enumerable.Range(128, used - 127).Select(i => HistogramReference.Divergence(counts[..used], i, 128)).ToArray();
        double min = divergences.Min();
        int expected = 128 + Array.FindLastIndex(divergences, d => d <= min + EntropyObserver.TieTolerance);
        Assert.Equal((float)Math.Min(expected * width, observer.MaxMagnitude), observer.ComputeThreshold());
        Assert.True(observer.ComputeThreshold() < observer.MaxMagnitude);
    }

    [Fact]
    public void Golden_TwoMagnitudes_TiesAtZeroDivergence_TakeTheLast()
    {
        // 2048 bins, amax 2: width 2^-9; 0.5, 1 and 2 sit in bins 256, 512 and 1024 (bins 0 and 1 are empty).
        // Candidate 257 folds everything into bin 256 (P = Q = [3]: KL 0), candidate 1025 keeps all three (KL 0),
        // candidate 513 has P = [1, 2] against Q = [1, 1] (KL > 0), and every other has an empty last bin under a tail.
        EntropyObserver observer = new(QuantizationScheme.UInt8PerTensorAsymmetric());
        observer.Observe([-1f, 2f, 0.5f], [3]);
        Assert.Equal(1025, observer.UsedBinCount);
        Assert.Equal(2f, observer.ComputeThreshold());

        long[] bins = observer.Counts[..1025].ToArray();
        Assert.Equal(0, HistogramReference.Divergence(bins, 257, 128));
        Assert.Equal(0, HistogramReference.Divergence(bins, 1025, 128));
        Assert.Equal((Math.Log(2.0 / 3) / 3) + (2 * Math.Log(4.0 / 3) / 3), HistogramReference.Divergence(bins, 513, 128), 12);
        Assert.Equal(double.PositiveInfinity, HistogramReference.Divergence(bins, 300, 128));
    }

    [Fact]
    public void HeavyTailedData_IsClipped_UniformDataIsNot()
    {
        // Laplace bulk with outliers at up to 40: the threshold lands inside the bulk.
        float[] heavyTailed = HistogramObserverTests.HeavyTailed();
        EntropyObserver heavy = new(QuantizationScheme.Int8PerTensor());
        heavy.Observe(heavyTailed, [heavyTailed.Length]);
        Assert.InRange(heavy.ComputeThreshold(), 4f, 20f);

        // TensorRT's rule: a candidate whose last kept bin is empty under a non-empty tail diverges, so outliers isolated
        // far beyond the bulk (here one at 300, bulk up to 14, first candidate 128 bins = 32) cannot be clipped.
        float[] isolated = heavyTailed[..200_000].Append(300f).ToArray();
        EntropyObserver kept = new(QuantizationScheme.Int8PerTensor());
        kept.Observe(isolated, [isolated.Length]);
        Assert.Equal(300f, kept.ComputeThreshold());

        float[] uniform = Enumerable.Range(0, 200_001).Select(i => (i / 100_000f) - 1f).ToArray();
        EntropyObserver flat = new(QuantizationScheme.Int8PerTensor());
        flat.Observe(uniform, [uniform.Length]);
        Assert.InRange(flat.ComputeThreshold(), 0.9f, 1f);
    }

    [Fact]
    public void ConstantData_KeepsTheConstant()
    {
        EntropyObserver observer = new(QuantizationScheme.UInt8PerTensorAsymmetric());
        observer.Observe(Enumerable.Repeat(3.7f, 1000).ToArray(), [1000]);
        Assert.Equal(3.7f, observer.ComputeThreshold());
        Assert.Equal(NumericConvention.Onnx.ComputeParameters(0f, 3.7f, QuantizedType.UInt8, symmetric: false), observer.ComputeParameters()[0]);
    }
}
