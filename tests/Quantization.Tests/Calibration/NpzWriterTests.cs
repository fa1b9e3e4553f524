using System.Buffers.Binary;
using System.IO.Compression;

namespace Quantization.Tests.Calibration;

public class NpzWriterTests
{
    public static TheoryData<NpyDataType, bool> DtypesAndCompression()
    {
        TheoryData<NpyDataType, bool> data = [];
        foreach (NpyDataType type in Enum.GetValues<NpyDataType>())
        {
            data.Add(type, false);
            data.Add(type, true);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(DtypesAndCompression))]
    public void RoundTrip_EveryDtype_AndShape(NpyDataType type, bool compress)
    {
        int[][] shapes = [[], [0], [3, 0, 2], [7], [2, 3], [2, 3, 4], [1, 1, 1, 5]];
        Random random = new((int)type);
        Dictionary<string, NumPyArray> arrays = [];
        for (int s = 0; s < shapes.Length; s++)
        {
            int count = shapes[s].Aggregate(1, (a, b) => a * b);
            byte[] bytes = new byte[count * NumPyArray.ElementSizeOf(type)];
            random.NextBytes(bytes);
            if (type == NpyDataType.Bool)
            {
                bytes = [.. bytes.Select(b => (byte)(b & 1))];
            }

            arrays[$"a{s}"] = new NumPyArray(type, shapes[s], bytes);
        }

        using MemoryStream stream = new();
        NpzWriter.Write(stream, arrays, compress);
        stream.Position = 0;
        IReadOnlyDictionary<string, NumPyArray> read = NpzReader.Read(stream);
        Assert.Equal(arrays.Keys, read.Keys);
        foreach ((string name, NumPyArray array) in arrays)
        {
            Assert.Equal(type, read[name].DataType);
            Assert.Equal(array.Shape, read[name].Shape);
            Assert.Equal(array.Bytes.ToArray(), read[name].Bytes.ToArray());
        }

        // Stored (method 0) as numpy.savez, DEFLATE (8) as numpy.savez_compressed, in every local header.
        byte[] file = stream.ToArray();
        Assert.Equal(compress ? 8 : 0, BinaryPrimitives.ReadUInt16LittleEndian(file.AsSpan(8)));
    }

    [Fact]
    public void Members_AreNumpysNpyBytes_AndTheFileIsDeterministic()
    {
        Dictionary<string, NumPyArray> golden = NpzReaderTests.Golden().Where(g => g.Name != "big").ToDictionary(g => g.Name, g => g.Array);
        using ZipArchive numpy = ZipFile.OpenRead(Path.Combine(AppContext.BaseDirectory, "Calibration", "Data", "golden.npz"));
        foreach ((string name, NumPyArray array) in golden)
        {
            using Stream member = numpy.GetEntry(name + ".npy")!.Open();
            using MemoryStream bytes = new();
            member.CopyTo(bytes);
            Assert.Equal(bytes.ToArray(), NpzReaderTests.Npy(array));
        }

        using MemoryStream first = new(), second = new();
        NpzWriter.Write(first, golden, compress: true);
        NpzWriter.Write(second, golden, compress: true);
        Assert.Equal(first.ToArray(), second.ToArray());
    }

    [Fact]
    public void Rank_IsLimitedToNumpys64_AndEveryHeaderIsAligned()
    {
        NumPyArray deep = new(NpyDataType.Float32, Enumerable.Repeat(1, 64).ToArray(), new byte[4]);
        byte[] npy = NpzReaderTests.Npy(deep);
        Assert.Equal(1, npy[6]);
        Assert.Equal(0, (10 + BinaryPrimitives.ReadUInt16LittleEndian(npy.AsSpan(8))) % 64);
        Assert.Equal(64, NpyReader.ParseArray(npy).Shape.Count);
        NumPyArray tooDeep = new(NpyDataType.Float32, Enumerable.Repeat(1, 65).ToArray(), new byte[4]);
        Assert.Throws<ArgumentException>(() => NpzReaderTests.Npy(tooDeep));
    }

    [Fact]
    public void File_IsWrittenAtomically_AndNamesAreChecked()
    {
        string directory = Directory.CreateTempSubdirectory("npz-").FullName;
        try
        {
            string path = Path.Combine(directory, "batch.npz");
            NpzWriter.Write(path, new Dictionary<string, NumPyArray> { ["x"] = NumPyArray.Create<float>([1f, 2f], 2) });
            byte[] before = File.ReadAllBytes(path);
            using CancellationTokenSource cancelled = new();
            cancelled.Cancel();
            Assert.ThrowsAny<OperationCanceledException>(() => NpzWriter.Write(path, new Dictionary<string, NumPyArray> { ["y"] = NumPyArray.Create<float>([3f], 1) }, cancellationToken: cancelled.Token));
            Assert.Equal(before, File.ReadAllBytes(path));
            Assert.Equal(["batch.npz"], Directory.GetFiles(directory).Select(Path.GetFileName));

            NumPyArray one = NumPyArray.Create<float>([1f], 1);
            foreach (string bad in new[] { "../x", "/x", "a/../../b", "a\\b", "", "a//b", "c:x" })
            {
                Assert.Throws<ArgumentException>(() => NpzWriter.Write(path, [new(bad, one)]));
            }

            Assert.Contains("twice", Assert.Throws<ArgumentException>(() => NpzWriter.Write(path, [new("x", one), new("x", one)])).Message, StringComparison.Ordinal);
            Assert.Throws<ArgumentNullException>(() => NpzWriter.Write(path, [new("x", null!)]));
            Assert.Equal(before, File.ReadAllBytes(path));

            // Subdirectory names are kept, as numpy keeps them.
            NpzWriter.Write(path, [new("layer/0", one)]);
            Assert.Equal(["layer/0"], NpzReader.Read(path).Keys);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }
}
