using CsCheck;

using Quantization.Tests.TestUtilities;

namespace Quantization.Tests.Quantizers;

/// <summary>The data-free range search: its bits against rounding to nearest and a brute-force error, and its bad input.</summary>
public class WeightRangeSearchTests
{
    /// <summary>The 8-bit schemes of every convention, and symmetric int4 and asymmetric uint4.</summary>
    private static readonly Gen<QuantizationScheme> Schemes = Gen.OneOf(Generators.Schemes, Gen.Bool.Select(symmetric => QuantizationScheme.Int4PerGroup(8, symmetric)));

    [Fact]
    public void Quantize_WithTheRatioOneOnly_IsRoundingToNearestBitForBit()
    {
        WeightRangeSearch search = new();
        search.Ratios.Clear();
        search.Ratios.Add(1);
        Gen.Select(Generators.Layouts, Schemes, Gen.UInt).Sample(
            (layout, baseScheme, seed) =>
            {
                (int[] shape, QuantizationGranularity granularity) = layout;
                QuantizationScheme scheme = baseScheme.WithGranularity(granularity);
                float[] values = Floats.Array(shape.Aggregate(1, (a, b) => a * b), seed);

                QuantizedTensor rtn;
                try
                {
                    rtn = QuantizedTensor.Quantize(values, shape, scheme, "w");
                }
                catch (ArgumentException)
                {
                    // GgmlQ8_0's fp16 scale cannot hold the range: the search refuses the weight too.
                    Assert.Throws<ArgumentException>(() => search.Quantize(values, shape, scheme, "w"));
                    return;
                }

                QuantizedTensor searched = search.Quantize(values, shape, scheme, "w");

                Assert.Equal(rtn.Data.ToArray(), searched.Data.ToArray());
                Assert.Equal(rtn.Parameters.Scales.ToArray(), searched.Parameters.Scales.ToArray());
                Assert.Equal(rtn.Parameters.ZeroPoints.ToArray(), searched.Parameters.ZeroPoints.ToArray());
                Assert.Equal("w", searched.Name);
            },
            iter: 300);
    }

    [Fact]
    public void Quantize_NeverRaisesAParametersErrorAndKeepsItsCodesConsistent()
    {
        WeightRangeSearch search = new();
        Gen.Select(Generators.Layouts, Schemes.Where(s => s.Convention != NumericConvention.GgmlQ8_0), Gen.UInt).Sample(
            (layout, baseScheme, seed) =>
            {
                (int[] shape, QuantizationGranularity granularity) = layout;
                QuantizationScheme scheme = baseScheme.WithGranularity(granularity);
                float[] values = Floats.Array(shape.Aggregate(1, (a, b) => a * b), seed);

                QuantizedTensor searched = search.Quantize(values, shape, scheme);
                QuantizedTensor rtn = QuantizedTensor.Quantize(values, shape, scheme);
                double[] searchedErrors = Errors(values, searched.Dequantize(), shape, granularity, searched.Parameters.Count);
                double[] rtnErrors = Errors(values, rtn.Dequantize(), shape, granularity, rtn.Parameters.Count);
                for (int p = 0; p < searchedErrors.Length; p++)
                {
                    // The search compares sums in its own order; a different order of the same terms moves them by a few ulps.
                    Assert.True(searchedErrors[p] <= rtnErrors[p] * (1 + 1e-12), $"[{string.Join(",", shape)}] {granularity} parameter {p}: {searchedErrors[p]} > {rtnErrors[p]}");
                }

                // The codes are the values quantized with the chosen parameters (values beyond the range saturate).
                Assert.Equal(QuantizedTensor.Quantize(values, shape, scheme, searched.Parameters).Data.ToArray(), searched.Data.ToArray());
            },
            iter: 300);
    }

    [Fact]
    public void Quantize_Int4GroupsOfGaussianWeights_ClipsAndCutsTheError()
    {
        Random random = new(7);
        float[] weight = GptqTestData.Gaussian(random, 256 * 256);
        int[] shape = [256, 256];
        foreach (bool symmetric in new[] { true, false })
        {
            QuantizationScheme scheme = QuantizationScheme.Int4PerGroup(32, symmetric);
            QuantizedTensor rtn = QuantizedTensor.Quantize(weight, shape, scheme);
            QuantizedTensor searched = new WeightRangeSearch().Quantize(weight, shape, scheme);

            double rtnError = SquaredError(weight, rtn.Dequantize());
            double searchedError = SquaredError(weight, searched.Dequantize());
            Assert.True(searchedError < 0.95 * rtnError, $"symmetric {symmetric}: {searchedError} vs {rtnError}");
            Assert.True(searched.Parameters.Scales.ToArray().Zip(rtn.Parameters.Scales.ToArray()).Count(s => s.First < s.Second) > rtn.Parameters.Count / 2, "Most groups clip.");
        }
    }

    [Fact]
    public void Quantize_ZeroRangeAndEmptyTensors_GetRoundingToNearestsParameters()
    {
        QuantizationScheme scheme = QuantizationScheme.Int4PerGroup(4, symmetric: false);
        float[] values = [0, 0, 0, 0, 2, 2, 2, 2];
        QuantizedTensor searched = new WeightRangeSearch().Quantize(values, [2, 4], scheme);
        QuantizedTensor rtn = QuantizedTensor.Quantize(values, [2, 4], scheme);
        Assert.Equal(rtn.Parameters.Scales.ToArray(), searched.Parameters.Scales.ToArray());
        Assert.Equal(values, searched.Dequantize());

        QuantizedTensor empty = new WeightRangeSearch().Quantize([], [0, 4], scheme);
        Assert.Equal(QuantizedTensor.Quantize([], [0, 4], scheme).Parameters.Scales.ToArray(), empty.Parameters.Scales.ToArray());
    }

    [Fact]
    public void Quantize_BadInput_Throws()
    {
        QuantizationScheme scheme = QuantizationScheme.Int4PerGroup(4);
        WeightRangeSearch search = new();
        NonFiniteValueException nan = Assert.Throws<NonFiniteValueException>(() => search.Quantize([1, float.NaN, 2, 3], [1, 4], scheme, "layer.weight"));
        Assert.Contains("layer.weight", nan.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => search.Quantize([1, 2, 3], [1, 4], scheme));
        Assert.Throws<ArgumentNullException>(() => search.Quantize([1, 2, 3, 4], [1, 4], null!));

        search.Ratios.Add(1.5);
        Assert.Throws<ArgumentOutOfRangeException>(() => search.Quantize([1, 2, 3, 4], [1, 4], scheme));
        search.Ratios.Clear();
        search.Ratios.Add(0);
        Assert.Throws<ArgumentOutOfRangeException>(() => search.Quantize([1, 2, 3, 4], [1, 4], scheme));
        search.Ratios.Clear();
        Assert.Throws<ArgumentException>(() => search.Quantize([1, 2, 3, 4], [1, 4], scheme));
    }

    [Fact]
    public void Gptq_WithRangeSearch_RoundsWithTheSearchedParametersAndFallsBackToTheSearch()
    {
        const int K = 64, N = 32, Rows = 512;
        Random random = new(3);
        float[] weight = GptqTestData.Gaussian(random, N * K);
        HessianAccumulator hessian = new(K);
        hessian.Add(GptqTestData.CorrelatedInputs(random, Rows, K, GptqTestData.Mixing(random, K)), [Rows, K], "x");
        QuantizationScheme scheme = QuantizationScheme.Int4PerGroup(16, symmetric: false);
        GptqOptions options = new() { ActivationOrder = true, RangeSearch = new WeightRangeSearch() };

        QuantizedTensor searched = options.RangeSearch.Quantize(weight, [N, K], scheme);
        QuantizedTensor gptq = GptqQuantizer.Quantize(weight, [N, K], scheme, hessian, options);
        Assert.Equal(searched.Parameters.Scales.ToArray(), gptq.Parameters.Scales.ToArray());
        Assert.Equal(searched.Parameters.ZeroPoints.ToArray(), gptq.Parameters.ZeroPoints.ToArray());
        Assert.NotEqual(searched.Data.ToArray(), gptq.Data.ToArray());

        QuantizedTensor unseen = GptqQuantizer.Quantize(weight, [N, K], scheme, new HessianAccumulator(K), options);
        Assert.Equal(searched.Data.ToArray(), unseen.Data.ToArray());
    }

    private static double[] Errors(float[] values, float[] restored, int[] shape, QuantizationGranularity granularity, int count)
    {
        double[] errors = new double[count];
        for (int i = 0; i < values.Length; i++)
        {
            double e = restored[i] - (double)values[i];
            errors[ScalarReference.ParameterIndex(shape, granularity, i)] += e * e;
        }

        return errors;
    }

    private static double SquaredError(float[] values, float[] restored) => values.Zip(restored).Sum(p => (p.Second - (double)p.First) * (p.Second - (double)p.First));
}
