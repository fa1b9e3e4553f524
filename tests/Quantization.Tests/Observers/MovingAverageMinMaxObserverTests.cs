using CsCheck;

using Quantization.Tests.TestUtilities;

namespace Quantization.Tests.Observers;

public class MovingAverageMinMaxObserverTests
{
    [Fact]
    public void Observe_FollowsTorchsMovingAverage()
    {
        Gen.Select(Gen.Int[1, 12], Gen.Float[0.001f, 1f], Gen.UInt).Sample(
            (count, constant, seed) =>
            {
                float[][] batches = Enumerable.Range(0, count).Select(b => Floats.Array(50, seed + (uint)b).Select(v => Math.Clamp(v, -1e6f, 1e6f)).ToArray()).ToArray();
                MovingAverageMinMaxObserver observer = new(QuantizationScheme.UInt8PerTensorAsymmetric(), constant);
                float min = 0, max = 0;
                for (int b = 0; b < count; b++)
                {
                    observer.Observe(batches[b], [50]);
                    (float batchMin, float batchMax) = ScalarReference.MinMax(batches[b]);
                    (min, max) = b == 0 ? (batchMin, batchMax) : (min + (constant * (batchMin - min)), max + (constant * (batchMax - max)));
                }

                Assert.Equal(min, observer.Minimums[0]);
                Assert.Equal(max, observer.Maximums[0]);
            },
            iter: 300);
    }

    [Fact]
    public void Merge_OfEarlierAndLaterBatches_EqualsOneObserverFedAll()
    {
        Gen.Select(Generators.Layouts, Gen.Int[2, 8], Gen.Float[0.01f, 0.9f], Gen.UInt).Sample(
            (layout, count, constant, seed) =>
            {
                (int[] shape, QuantizationGranularity granularity) = layout;
                QuantizationScheme scheme = QuantizationScheme.Int8PerTensor().WithGranularity(granularity);
                int elements = shape.Aggregate(1, (a, b) => a * b);
                float[][] batches = Enumerable.Range(0, count).Select(b => Floats.Array(elements, seed + (uint)b).Select(v => Math.Clamp(v, -1000f, 1000f)).ToArray()).ToArray();
                int split = Math.Max(1, count / 2);
                MovingAverageMinMaxObserver all = Fed(scheme, constant, shape, batches);
                MovingAverageMinMaxObserver earlier = Fed(scheme, constant, shape, batches[..split]);
                earlier.Merge(Fed(scheme, constant, shape, batches[split..]));
                MovingAverageMinMaxObserver empty = new(scheme, constant);
                empty.Merge(all);
                for (int p = 0; p < all.Minimums.Length; p++)
                {
                    Assert.Equal(all.Minimums[p], earlier.Minimums[p], 1e-3f);
                    Assert.Equal(all.Maximums[p], earlier.Maximums[p], 1e-3f);
                }

                Assert.Equal(all.ObservedCount, earlier.ObservedCount);
                Assert.Equal(all.Minimums.ToArray(), empty.Minimums.ToArray());
            },
            iter: 200);
    }

    [Fact]
    public void SkippedParameters_KeepTheirRangeForThatBatch()
    {
        MovingAverageMinMaxObserver observer = new(QuantizationScheme.Int8PerChannel(), 0.5f, NonFinitePolicy.Skip);
        observer.Observe([1f, 2f, -1f, 4f], [2, 2]);
        observer.Observe([float.NaN, float.NaN, -3f, 8f], [2, 2]);
        Assert.Equal([1f, -2f], observer.Minimums.ToArray());
        Assert.Equal([2f, 6f], observer.Maximums.ToArray());
        Assert.Equal(2, observer.SkippedCount);
        QuantizationParameters parameters = observer.ComputeParameters();
        Assert.Equal(new ScaleAndZeroPoint((float)(4.0 / 254), 0), parameters[0]);
        observer.Reset();
        Assert.True(observer.Minimums.IsEmpty);
    }

    [Fact]
    public void BadArguments_Throw()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new MovingAverageMinMaxObserver(QuantizationScheme.Int8PerTensor(), 0f));
        Assert.Throws<ArgumentOutOfRangeException>(() => new MovingAverageMinMaxObserver(QuantizationScheme.Int8PerTensor(), 1.5f));
        Assert.Throws<ArgumentOutOfRangeException>(() => new MovingAverageMinMaxObserver(QuantizationScheme.Int8PerTensor(), float.NaN));
        MovingAverageMinMaxObserver observer = new(QuantizationScheme.Int8PerTensor(), 0.1f);
        Assert.Throws<ArgumentException>(() => observer.Merge(new MovingAverageMinMaxObserver(QuantizationScheme.Int8PerTensor(), 0.2f)));
        Assert.Throws<ArgumentException>(() => observer.Merge(new MovingAverageMinMaxObserver(QuantizationScheme.Int8PerChannel(), 0.1f)));
        Assert.Throws<ArgumentNullException>(() => observer.Merge(null!));
    }

    private static MovingAverageMinMaxObserver Fed(QuantizationScheme scheme, float constant, int[] shape, float[][] batches)
    {
        MovingAverageMinMaxObserver observer = new(scheme, constant);
        foreach (float[] batch in batches)
        {
            observer.Observe(batch, shape);
        }

        return observer;
    }
}
