using CsCheck;

using Quantization.Tests.TestUtilities;

namespace Quantization.Tests.Observers;

public class HistogramObserverTests
{
    /// <summary>
    /// 1 to 6 batches of 0 to 300 values, each batch at its own magnitude (so later batches widen the range), some all
    /// zero, some subnormal (bin widths below 2^-126 take the double path), some near float.MaxValue.
    /// </summary>
    internal static readonly Gen<float[][]> Batches =
        Gen.Select(Gen.OneOf(0f, 1e-42f, 1e-38f, 1e-30f, 1e-3f, 1f, 7f, 300f, 1e6f, 3e30f, 3e38f), Gen.Float[-1f, 1f].Array[0, 300])
            .Select(t => t.Item2.Select(v => v * t.Item1).ToArray())
            .Array[1, 6];

    internal static readonly Gen<int> BinCounts = Gen.OneOf(256, 300, 1000, 2048);

    internal static readonly Gen<QuantizationScheme> Schemes = Gen.OneOf(
        QuantizationScheme.UInt8PerTensorAsymmetric(),
        QuantizationScheme.Int8PerTensor(),
        new QuantizationScheme(QuantizedType.Int8, symmetric: false, QuantizationGranularity.PerTensor),
        new QuantizationScheme(QuantizedType.Int8, symmetric: true, QuantizationGranularity.PerTensor, NumericConvention.Torch),
        new QuantizationScheme(QuantizedType.UInt8, symmetric: false, QuantizationGranularity.PerTensor, NumericConvention.Torch));

    [Fact]
    public void Observe_InBatches_GivesTheHistogramOfTheDefinitionOverAllValues()
    {
        Gen.Select(Batches, BinCounts).Sample(
            (batches, bins) =>
            {
                PercentileObserver observer = Fed(new PercentileObserver(QuantizationScheme.UInt8PerTensorAsymmetric(), binCount: bins), batches);
                float[] all = batches.SelectMany(b => b).ToArray();
                (long[] counts, double width, int used) = HistogramReference.Histogram(all, bins);
                Assert.Equal(counts, observer.Counts.ToArray());
                Assert.Equal(width, observer.BinWidth);
                Assert.Equal(used, observer.UsedBinCount);
                Assert.Equal(all.Length, observer.ObservedCount);
                Assert.Equal(all.Length == 0 ? 0f : all.Max(v => MathF.Abs(v)), observer.MaxMagnitude);
                Assert.Equal(all.Length == 0 ? float.PositiveInfinity : all.Min() + 0f, observer.Minimum);
                Assert.Equal(all.Length == 0 ? float.NegativeInfinity : all.Max() + 0f, observer.Maximum);
                Assert.True(used == 0 || used > bins / 2 || width == 0, "at least half the bins are in use");
                Assert.True(used == 0 || observer.Counts[used - 1] > 0, "the last bin in use holds amax");
            },
            iter: 300);
    }

    [Fact]
    public void Merge_OfObserversFedAnySplit_EqualsOneObserverFedAll_ForEveryMethod()
    {
        Gen.Select(Batches, BinCounts, Schemes, Gen.Int[0, 6], Gen.Int[0, 2]).Sample(
            (batches, bins, scheme, split, firstMethod) =>
            {
                split = Math.Min(split, batches.Length);
                foreach (Func<HistogramObserver> create in Creators(scheme, bins))
                {
                    HistogramObserver all = Fed(create(), batches);
                    HistogramObserver forward = Fed(create(), batches[..split]);
                    HistogramObserver backward = Fed(create(), batches[split..]);

                    // Any histogram observer merges into any other: the statistics do not depend on the method.
                    HistogramObserver other = Fed(Creators(scheme, bins)[firstMethod](), batches[split..]);
                    forward.Merge(other);
                    backward.Merge(Fed(create(), batches[..split]));
                    foreach (HistogramObserver merged in new[] { forward, backward })
                    {
                        Assert.Equal(all.Counts.ToArray(), merged.Counts.ToArray());
                        Assert.Equal(all.BinWidth, merged.BinWidth);
                        Assert.Equal(all.Minimum, merged.Minimum);
                        Assert.Equal(all.Maximum, merged.Maximum);
                        Assert.Equal(all.MaxMagnitude, merged.MaxMagnitude);
                        Assert.Equal(all.ObservedCount, merged.ObservedCount);
                        if (all.ObservedCount > 0)
                        {
                            Assert.Equal(all.ComputeThreshold(), merged.ComputeThreshold());
                            Assert.Equal(all.ComputeParameters()[0], merged.ComputeParameters()[0]);
                        }
                    }
                }
            },
            iter: 100);
    }

    [Fact]
    public void Thresholds_AreTheSameBitsOnEverySimdTier()
    {
        // Pinned from this implementation: CI reruns this namespace with AVX-512, AVX2 and all intrinsics disabled.
        float[] data = HeavyTailed();
        foreach ((QuantizationScheme scheme, float mse) in new[] { (QuantizationScheme.UInt8PerTensorAsymmetric(), 13.9375f), (QuantizationScheme.Int8PerTensor(), 13.875f) })
        {
            HistogramObserver[] observers = [new PercentileObserver(scheme), new EntropyObserver(scheme), new MseObserver(scheme)];
            foreach (HistogramObserver observer in observers)
            {
                observer.Observe(data, [data.Length]);
                Assert.Equal(1.0 / 32, observer.BinWidth);
            }

            Assert.Equal(11.625f, observers[0].ComputeThreshold()); // |Laplace(0, 1)| has its 99.999th percentile at ln(1e5) = 11.51
            Assert.Equal(10.8125f, observers[1].ComputeThreshold());
            Assert.Equal(mse, observers[2].ComputeThreshold());
        }
    }

    [Fact]
    public void Widening_MergesAdjacentBinsByPowersOfTwo_KeepingEveryCount()
    {
        EntropyObserver observer = new(QuantizationScheme.Int8PerTensor(), binCount: 256);
        observer.Observe([0f, 0f], [2]);
        Assert.Equal(0.0, observer.BinWidth);
        Assert.Equal(2, observer.Counts[0]);

        // amax 1: the smallest 2^e with 1 < 256 * 2^e is 2^-7; 1 lands in bin 128.
        observer.Observe([1f, -0.25f], [2]);
        Assert.Equal(1.0 / 128, observer.BinWidth);
        Assert.Equal(2, observer.Counts[0]);
        Assert.Equal(1, observer.Counts[32]);
        Assert.Equal(1, observer.Counts[128]);

        // amax 3: width 2^-6, each pair of bins merges: 128 -> 64, 32 -> 16; 3 lands in bin 192.
        observer.Observe([3f], [1]);
        Assert.Equal(1.0 / 64, observer.BinWidth);
        Assert.Equal([(0, 2L), (16, 1L), (64, 1L), (192, 1L)], NonEmpty(observer));
        Assert.Equal(193, observer.UsedBinCount);

        // A jump of more than 31 doublings sends every earlier count to bin 0.
        observer.Observe([3e30f], [1]);
        Assert.Equal([(0, 5L), (NonEmpty(observer)[^1].Bin, 1L)], NonEmpty(observer));
        Assert.Equal(6, observer.Counts.ToArray().Sum());
        Assert.Equal(HistogramReference.Histogram([0f, 0f, 1f, -0.25f, 3f, 3e30f], 256).Counts, observer.Counts.ToArray());
    }

    [Fact]
    public void NonFinite_ThrowPolicy_ThrowsAndLeavesTheObserverAsItWas()
    {
        MseObserver observer = new(QuantizationScheme.UInt8PerTensorAsymmetric());
        observer.Observe([1f, -2f, 3f], [3], "x");
        long[] counts = observer.Counts.ToArray();
        float[] values = Enumerable.Range(0, 100).Select(i => i * 10f).ToArray();
        values[70] = float.PositiveInfinity;
        NonFiniteValueException error = Assert.Throws<NonFiniteValueException>(() => observer.Observe(values, [100], "x"));
        Assert.Equal(70, error.Index);
        Assert.Equal("x", error.TensorName);
        Assert.Equal(counts, observer.Counts.ToArray());
        Assert.Equal(3, observer.ObservedCount);
        Assert.Equal(3f, observer.MaxMagnitude);
        Assert.Equal(1.0 / 512, observer.BinWidth);
    }

    [Fact]
    public void NonFinite_SkipPolicy_LeavesThemOutAndCountsThem()
    {
        Gen.Select(Batches, Gen.Int[0, 1000]).Sample(
            (batches, seed) =>
            {
                float[][] dirty = batches.Select((b, n) => b.Select((v, i) => (i * 7 + n + seed) % 13 == 0 ? new[] { float.NaN, float.PositiveInfinity, float.NegativeInfinity }[i % 3] : v).ToArray()).ToArray();
                EntropyObserver observer = new(QuantizationScheme.UInt8PerTensorAsymmetric(), binCount: 300, NonFinitePolicy.Skip);
                Fed(observer, dirty);
                float[] all = dirty.SelectMany(b => b).ToArray();
                Assert.Equal(HistogramReference.Histogram(all, 300).Counts, observer.Counts.ToArray());
                Assert.Equal(all.Count(float.IsFinite), observer.ObservedCount);
                Assert.Equal(all.Count(v => !float.IsFinite(v)), observer.SkippedCount);
                Assert.True(float.IsFinite(observer.MaxMagnitude));
            },
            iter: 200);
    }

    [Fact]
    public void ZeroData_AndNoFiniteData_GiveScaleOneZeroPointZero()
    {
        foreach (QuantizationScheme scheme in new[] { QuantizationScheme.UInt8PerTensorAsymmetric(), QuantizationScheme.Int8PerTensor() })
        {
            foreach (Func<HistogramObserver> create in Creators(scheme, HistogramObserver.DefaultBinCount))
            {
                HistogramObserver zeros = create();
                zeros.Observe(new float[1000], [10, 100]);
                zeros.Observe([-0f], [1]);
                Assert.Equal(0f, zeros.ComputeThreshold());
                Assert.Equal(new ScaleAndZeroPoint(1f, 0), zeros.ComputeParameters()[0]);
                Assert.Equal(1001, zeros.Counts[0]);
                Assert.Equal(1, zeros.UsedBinCount);
            }

            HistogramObserver skipped = new PercentileObserver(scheme, nonFinitePolicy: NonFinitePolicy.Skip);
            skipped.Observe([float.NaN, float.NegativeInfinity], [2]);
            skipped.Observe([], [0]);
            Assert.Equal(0, skipped.ObservedCount);
            Assert.Equal(new ScaleAndZeroPoint(1f, 0), skipped.ComputeParameters()[0]);
        }
    }

    [Fact]
    public void Parameters_FollowTheDocumentedRange_ThroughTheSchemesConvention()
    {
        // Post-ReLU data [0, 6]: the asymmetric range is [0, t] (zero point 0), the symmetric one [-t, t].
        float[] relu = Enumerable.Range(0, 6001).Select(i => i / 1000f).ToArray();
        foreach (Func<QuantizationScheme, HistogramObserver> create in new Func<QuantizationScheme, HistogramObserver>[] { s => new PercentileObserver(s, 99.9), s => new EntropyObserver(s), s => new MseObserver(s) })
        {
            HistogramObserver asymmetric = create(QuantizationScheme.UInt8PerTensorAsymmetric());
            asymmetric.Observe(relu, [relu.Length]);
            float t = asymmetric.ComputeThreshold();
            Assert.InRange(t, 5f, 6f);
            Assert.Equal(NumericConvention.Onnx.ComputeParameters(0f, t, QuantizedType.UInt8, symmetric: false), asymmetric.ComputeParameters()[0]);
            Assert.Equal(0, asymmetric.ComputeParameters()[0].ZeroPoint);

            HistogramObserver symmetric = create(QuantizationScheme.Int8PerTensor());
            symmetric.Observe(relu, [relu.Length]);
            Assert.Equal(t, symmetric.ComputeThreshold());
            Assert.Equal(NumericConvention.Onnx.ComputeParameters(-t, t, QuantizedType.Int8, symmetric: true), symmetric.ComputeParameters()[0]);

            // Signed data [-1, 6] with t below 6: asymmetric gets [-1, t].
            HistogramObserver signed = create(QuantizationScheme.UInt8PerTensorAsymmetric());
            signed.Observe(relu, [relu.Length]);
            signed.Observe([-1f], [1]);
            float ts = signed.ComputeThreshold();
            Assert.Equal(NumericConvention.Onnx.ComputeParameters(-1f, ts, QuantizedType.UInt8, symmetric: false), signed.ComputeParameters()[0]);
        }
    }

    [Fact]
    public void State_IsBoundedByTheBinCount_WhateverTheNumberOfCalls()
    {
        EntropyObserver observer = new(QuantizationScheme.UInt8PerTensorAsymmetric());
        float[] batch = new float[1024];
        void Feed(int call)
        {
            for (int i = 0; i < batch.Length; i++)
            {
                batch[i] = MathF.Sin(call + i) * (1 + (call % 97));
            }

            observer.Observe(batch, [4, 256]);
        }

        for (int call = 0; call < 100; call++)
        {
            Feed(call); // warm up: the first calls compile the code
        }

        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int call = 100; call < 10_100; call++)
        {
            Feed(call);
        }

        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(allocated < 4096, $"10,000 Observe calls allocated {allocated} bytes");
        Assert.Equal(HistogramObserver.DefaultBinCount, observer.Counts.Length);
        Assert.Equal(10_100L * 1024, observer.Counts.ToArray().Sum());
        Assert.Equal(10_100L * 1024, observer.ObservedCount);
    }

    [Fact]
    public void Factory_CreatesEachMethod_AndFitsTheObserverFactories()
    {
        QuantizationScheme scheme = QuantizationScheme.UInt8PerTensorAsymmetric();
        Assert.IsType<MinMaxObserver>(CalibrationMethod.MinMax.CreateObserver(scheme));
        Assert.Equal(99.9, Assert.IsType<PercentileObserver>(CalibrationMethod.Percentile.CreateObserver(scheme, percentile: 99.9)).Percentile);
        Assert.Equal(4096, Assert.IsType<EntropyObserver>(CalibrationMethod.Entropy.CreateObserver(scheme, binCount: 4096)).BinCount);
        Assert.IsType<MseObserver>(CalibrationMethod.Mse.CreateObserver(scheme));
        Assert.Equal(CalibrationMethod.Mse, Enum.Parse<CalibrationMethod>("mse", ignoreCase: true));
        Assert.Throws<ArgumentOutOfRangeException>(() => ((CalibrationMethod)7).CreateObserver(scheme));

        // The shape of OnnxStaticQuantizationOptions.CreateObserver.
        Func<QuantizationScheme, IQuantizationObserver> factory = s => new EntropyObserver(s);
        IQuantizationObserver observer = factory(scheme);
        observer.Observe([-1f, 2f, 0.5f], [3], "activation");
        Assert.Equal(3, observer.ObservedCount);
        Assert.Equal(NumericConvention.Onnx.ComputeParameters(-1f, 2f, QuantizedType.UInt8, symmetric: false), observer.ComputeParameters()[0]);
    }

    [Fact]
    public void BadUse_GetsClearExceptions()
    {
        QuantizationScheme perChannel = QuantizationScheme.Int8PerChannel();
        ArgumentException granularity = Assert.Throws<ArgumentException>(() => new EntropyObserver(perChannel));
        Assert.Contains("PerChannel", granularity.Message, StringComparison.Ordinal);
        Assert.Equal("scheme", granularity.ParamName);
        Assert.Throws<ArgumentException>(() => new MseObserver(QuantizationScheme.GgmlQ8_0()));
        Assert.Throws<ArgumentNullException>(() => new PercentileObserver(null!));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PercentileObserver(QuantizationScheme.Int8PerTensor(), 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PercentileObserver(QuantizationScheme.Int8PerTensor(), 100.5));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PercentileObserver(QuantizationScheme.Int8PerTensor(), double.NaN));
        Assert.Throws<ArgumentOutOfRangeException>(() => new EntropyObserver(QuantizationScheme.Int8PerTensor(), binCount: 255));
        Assert.Throws<ArgumentOutOfRangeException>(() => new EntropyObserver(QuantizationScheme.Int8PerTensor(), binCount: (1 << 20) + 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => new MseObserver(QuantizationScheme.Int8PerTensor(), nonFinitePolicy: (NonFinitePolicy)5));

        EntropyObserver observer = new(QuantizationScheme.Int8PerTensor());
        Assert.Throws<InvalidOperationException>(() => observer.ComputeThreshold());
        Assert.Throws<InvalidOperationException>(() => observer.ComputeParameters());
        Assert.Throws<ArgumentException>(() => observer.Observe(new float[5], [2, 3]));
        Assert.Throws<ArgumentException>(() => observer.Observe(new float[5], []));
        Assert.Throws<ArgumentException>(() => observer.Merge(observer));
        Assert.Throws<ArgumentException>(() => observer.Merge(new EntropyObserver(QuantizationScheme.UInt8PerTensorAsymmetric())));
        Assert.Throws<ArgumentException>(() => observer.Merge(new EntropyObserver(QuantizationScheme.Int8PerTensor(), binCount: 4096)));
        Assert.Throws<ArgumentNullException>(() => observer.Merge(null!));

        // Reset forgets everything; merging an empty observer changes nothing.
        observer.Observe([5f, -1f], [2]);
        observer.Merge(new MseObserver(QuantizationScheme.Int8PerTensor()));
        Assert.Equal(2, observer.ObservedCount);
        observer.Reset();
        Assert.Equal(0, observer.ObservedCount);
        Assert.Equal(0.0, observer.BinWidth);
        Assert.Equal(0, observer.UsedBinCount);
        Assert.All(observer.Counts.ToArray(), c => Assert.Equal(0, c));
        Assert.Throws<InvalidOperationException>(() => observer.ComputeThreshold());
    }

    /// <summary>A million Laplace(0, 1) samples (bulk up to about 14) and three outliers at 30, -35 and 40.</summary>
    internal static float[] HeavyTailed()
    {
        Random random = new(7);
        float[] data = new float[1_000_003];
        for (int i = 0; i < data.Length - 3; i++)
        {
            double u = random.NextDouble() - 0.5;
            data[i] = (float)(-Math.Sign(u) * Math.Log(1 - (2 * Math.Abs(u))));
        }

        (data[^3], data[^2], data[^1]) = (30f, -35f, 40f);
        return data;
    }

    internal static T Fed<T>(T observer, IEnumerable<float[]> batches)
        where T : HistogramObserver
    {
        foreach (float[] batch in batches)
        {
            observer.Observe(batch, [batch.Length], "batch");
        }

        return observer;
    }

    private static Func<HistogramObserver>[] Creators(QuantizationScheme scheme, int bins) =>
    [
        () => new PercentileObserver(scheme, binCount: bins),
        () => new EntropyObserver(scheme, bins),
        () => new MseObserver(scheme, bins),
    ];

    private static (int Bin, long Count)[] NonEmpty(HistogramObserver observer) =>
        observer.Counts.ToArray().Select((c, j) => (j, c)).Where(t => t.c != 0).ToArray();
}
