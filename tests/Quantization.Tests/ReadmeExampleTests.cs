namespace Quantization.Tests;

/// <summary>The README's usage example, kept compiling (it is below) and kept identical to the README (a test checks).</summary>
public class ReadmeExampleTests
{
    [Fact]
    public void ReadmeExample_RunsAndRoundTrips()
    {
        (sbyte[] data, float[] scales, float[] restored, float[] weight) = RunExample();
        Assert.Equal(256 * 512, data.Length);
        Assert.Equal(256, scales.Length);
        for (int i = 0; i < weight.Length; i++)
        {
            Assert.True(Math.Abs(weight[i] - restored[i]) <= scales[i / 512] / 2 * 1.0001f);
        }
    }

    [Fact]
    public void ReadmeExample_IsTheCodeInTheReadme()
    {
        string source = File.ReadAllText(Path.Combine(RepositoryRoot(), "tests", "Quantization.Tests", "ReadmeExampleTests.cs"));
        string readme = File.ReadAllText(Path.Combine(RepositoryRoot(), "README.md"));
        const string Begin = "// README-EXAMPLE-BEGIN", End = "// README-EXAMPLE-END";
        int start = source.LastIndexOf(Begin, StringComparison.Ordinal) + Begin.Length;
        string[] example = Lines(source[start..source.IndexOf(End, start, StringComparison.Ordinal)]);
        int block = readme.IndexOf("```csharp", readme.IndexOf("<!-- readme-example", StringComparison.Ordinal), StringComparison.Ordinal) + "```csharp".Length;
        string[] documented = Lines(readme[block..readme.IndexOf("```", block, StringComparison.Ordinal)]).Where(l => !l.StartsWith("using ", StringComparison.Ordinal)).ToArray();
        Assert.Equal(documented, example);
    }

    private static (sbyte[] Data, float[] Scales, float[] Restored, float[] Weight) RunExample()
    {
        // README-EXAMPLE-BEGIN
        float[] weight = LoadWeight();                 // an [out, in] = [256, 512] linear weight, row-major
        int[] shape = [256, 512];

        // Symmetric int8 with one scale per output channel, computed as ONNX Runtime computes it.
        QuantizedTensor q = QuantizedTensor.Quantize(weight, shape, QuantizationScheme.Int8PerChannel(), "fc1.weight");

        ReadOnlySpan<sbyte> data = q.GetInt8Data();    // 256 * 512 int8 values
        ReadOnlySpan<float> scales = q.Parameters.Scales; // 256 scales
        float[] restored = q.Dequantize();             // (q - zeroPoint) * scale
        // README-EXAMPLE-END
        return (data.ToArray(), scales.ToArray(), restored, weight);
    }

    private static float[] LoadWeight()
    {
        Random random = new(3);
        return Enumerable.Range(0, 256 * 512).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray();
    }

    private static string[] Lines(string text) =>
        text.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0).ToArray();

    private static string RepositoryRoot()
    {
        DirectoryInfo? directory = new(AppContext.BaseDirectory);
        while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "Quantization.sln")))
        {
            directory = directory.Parent;
        }

        return directory?.FullName ?? throw new InvalidOperationException("Quantization.sln not found above " + AppContext.BaseDirectory);
    }
}
