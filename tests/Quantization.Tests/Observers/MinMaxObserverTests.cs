using CsCheck;

using Quantization.Tests.TestUtilities;

namespace Quantization.Tests.Observers;

public class MinMaxObserverTests
{
    /// <summary>A layout, a scheme for it and 2 to 6 batches of that shape.</summary>
    private static readonly Gen<(int[] Shape, QuantizationScheme Scheme, float[][] Batches)> Cases =
        Gen.Select(Generators.Layouts, Generators.Schemes, Gen.Int[2, 6], Gen.UInt).Select(t =>
        {
            ((int[] shape, QuantizationGranularity granularity), QuantizationScheme scheme, int count, uint seed) = t;
            int elements = shape.Aggregate(1, (a, b) => a * b);
            float[][] batches = Enumerable.Range(0, count)
                .Select(b => Floats.Array(elements, seed + (uint)b).Select(v => Math.Clamp(v, -1e6f, 1e6f)).ToArray())
                .ToArray();
            return (shape, scheme.WithGranularity(granularity), batches);
        });

    [Fact]
    public void Merge_OfTwoObserversFedTwoParts_EqualsOneObserverFedAll_InEitherOrder()
    {
        Cases.Sample(
            (shape, scheme, batches) =>
            {
                MinMaxObserver all = Fed(scheme, shape, batches);
                int split = batches.Length / 2;
                MinMaxObserver first = Fed(scheme, shape, batches[..split]);
                MinMaxObserver second = Fed(scheme, shape, batches[split..]);
                MinMaxObserver forward = Fed(scheme, shape, batches[..split]);
                forward.Merge(second);
                second.Merge(first);
                foreach (MinMaxObserver merged in new[] { forward, second })
                {
                    Assert.Equal(all.Minimums.ToArray(), merged.Minimums.ToArray());
                    Assert.Equal(all.Maximums.ToArray(), merged.Maximums.ToArray());
                    Assert.Equal(all.ObservedCount, merged.ObservedCount);
                    Assert.Equal(all.ComputeParameters().Scales.ToArray(), merged.ComputeParameters().Scales.ToArray());
                    Assert.Equal(all.ComputeParameters().ZeroPoints.ToArray(), merged.ComputeParameters().ZeroPoints.ToArray());
                }
            },
            iter: 300);
    }

    [Fact]
    public void Observe_MatchesBruteForceMinMaxPerParameter()
    {
        Cases.Sample(
            (shape, scheme, batches) =>
            {
                MinMaxObserver observer = Fed(scheme, shape, batches);
                int count = ScalarReference.ParameterCount(shape, scheme.Granularity);
                float[] mins = Enumerable.Repeat(float.PositiveInfinity, count).ToArray();
                float[] maxs = Enumerable.Repeat(float.NegativeInfinity, count).ToArray();
                foreach (float[] batch in batches)
                {
                    for (int i = 0; i < batch.Length; i++)
                    {
                        int p = ScalarReference.ParameterIndex(shape, scheme.Granularity, i);
                        mins[p] = Math.Min(mins[p], batch[i]);
                        maxs[p] = Math.Max(maxs[p], batch[i]);
                    }
                }

                Assert.Equal(mins.Select(m => m + 0f), observer.Minimums.ToArray());
                Assert.Equal(maxs.Select(m => m + 0f), observer.Maximums.ToArray());
                Assert.Equal(scheme.Granularity.GetParameterShape(shape), observer.ParameterShape.ToArray());
            },
            iter: 300);
    }

    [Fact]
    public void ComputeParameters_OfOneBatch_EqualsDynamicQuantization()
    {
        Cases.Sample(
            (shape, scheme, batches) =>
            {
                MinMaxObserver observer = Fed(scheme, shape, batches[..1]);
                QuantizationParameters dynamic = QuantizedTensor.Quantize(batches[0], shape, scheme).Parameters;
                Assert.Equal(dynamic.Scales.ToArray(), observer.ComputeParameters().Scales.ToArray());
                Assert.Equal(dynamic.ZeroPoints.ToArray(), observer.ComputeParameters().ZeroPoints.ToArray());
            },
            iter: 300);
    }

    [Fact]
    public void NonFinite_ThrowPolicy_ThrowsAndLeavesTheObserverAsItWas()
    {
        MinMaxObserver observer = new(QuantizationScheme.Int8PerChannel(1));
        observer.Observe([1f, -2f, 3f, 4f, 5f, -6f], [2, 3], "x");
        float[] values = [10f, 20f, 30f, 40f, float.NaN, 60f];
        NonFiniteValueException error = Assert.Throws<NonFiniteValueException>(() => observer.Observe(values, [2, 3], "x"));
        Assert.Equal(4, error.Index);
        Assert.Equal([1f, -2f, -6f], observer.Minimums.ToArray());
        Assert.Equal([4f, 5f, 3f], observer.Maximums.ToArray());
        Assert.Equal(6, observer.ObservedCount);
    }

    [Fact]
    public void NonFinite_SkipPolicy_LeavesThemOutAndCountsThem()
    {
        foreach (QuantizationGranularity granularity in new[] { QuantizationGranularity.PerTensor, QuantizationGranularity.PerChannel(0), QuantizationGranularity.PerChannel(1) })
        {
            MinMaxObserver observer = new(QuantizationScheme.Int8PerTensor().WithGranularity(granularity), NonFinitePolicy.Skip);
            float[] values = Enumerable.Range(0, 4 * 40).Select(i => (float)i).ToArray();
            values[7] = float.NaN;
            values[100] = float.PositiveInfinity;
            values[159] = float.NegativeInfinity;
            observer.Observe(values, [4, 40]);
            Assert.Equal(3, observer.SkippedCount);
            Assert.Equal(157, observer.ObservedCount);
            Assert.All(observer.Minimums.ToArray(), m => Assert.True(float.IsFinite(m)));
            Assert.All(observer.Maximums.ToArray(), m => Assert.True(float.IsFinite(m)));
            Assert.Equal(158f, observer.Maximums.ToArray().Max());
        }
    }

    [Fact]
    public void SkipPolicy_AnyLayoutWithNonFiniteValues_MatchesBruteForceOverTheFiniteOnes()
    {
        Gen.Select(Generators.Layouts, Floats.Any.Array[1, 40_000], Gen.UInt).Sample(
            (layout, pool, seed) =>
            {
                (int[] shape, QuantizationGranularity granularity) = layout;
                int elements = shape.Aggregate(1, (a, b) => a * b);
                float[] values = Floats.Array(elements, seed);
                for (int i = 0; i < pool.Length && i < elements; i += 1 + (int)(seed % 97))
                {
                    values[i] = pool[i];
                }

                MinMaxObserver observer = new(QuantizationScheme.Int8PerTensor().WithGranularity(granularity), NonFinitePolicy.Skip);
                observer.Observe(values, shape);
                int count = ScalarReference.ParameterCount(shape, granularity);
                float[] mins = Enumerable.Repeat(float.PositiveInfinity, count).ToArray();
                float[] maxs = Enumerable.Repeat(float.NegativeInfinity, count).ToArray();
                int skipped = 0;
                for (int i = 0; i < elements; i++)
                {
                    if (!float.IsFinite(values[i]))
                    {
                        skipped++;
                        continue;
                    }

                    int p = ScalarReference.ParameterIndex(shape, granularity, i);
                    mins[p] = Math.Min(mins[p], values[i]);
                    maxs[p] = Math.Max(maxs[p], values[i]);
                }

                Assert.Equal(skipped, observer.SkippedCount);
                Assert.Equal(mins, observer.Minimums.ToArray());
                Assert.Equal(maxs, observer.Maximums.ToArray());
            },
            iter: 300);
    }

    [Fact]
    public void BadUse_GetsClearExceptions()
    {
        MinMaxObserver observer = new(QuantizationScheme.Int8PerChannel());
        Assert.Throws<InvalidOperationException>(() => observer.ComputeParameters());
        observer.Observe(new float[12], [3, 4]);
        ArgumentException shape = Assert.Throws<ArgumentException>(() => observer.Observe(new float[8], [2, 4]));
        Assert.Contains("[3]", shape.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => observer.Observe(new float[11], [3, 4]));
        Assert.Throws<ArgumentException>(() => observer.Merge(new MinMaxObserver(QuantizationScheme.Int8PerTensor())));
        Assert.Throws<ArgumentNullException>(() => new MinMaxObserver(null!));
        Assert.Throws<ArgumentOutOfRangeException>(() => new MinMaxObserver(QuantizationScheme.Int8PerTensor(), (NonFinitePolicy)9));

        // A channel that never saw a value gets the parameters of [0, 0]; Reset forgets the shape.
        MinMaxObserver skipping = new(QuantizationScheme.Int8PerChannel(), NonFinitePolicy.Skip);
        skipping.Observe([float.NaN, float.NaN, 1f, 2f], [2, 2]);
        Assert.Equal([1f, (float)(4.0 / 254)], skipping.ComputeParameters().Scales.ToArray());
        skipping.Reset();
        Assert.Equal(0, skipping.ObservedCount);
        skipping.Observe(new float[6], [3, 2]);
        Assert.Equal([3], skipping.ParameterShape.ToArray());
    }

    private static MinMaxObserver Fed(QuantizationScheme scheme, int[] shape, float[][] batches)
    {
        MinMaxObserver observer = new(scheme);
        foreach (float[] batch in batches)
        {
            observer.Observe(batch, shape, "batch");
        }

        return observer;
    }
}
